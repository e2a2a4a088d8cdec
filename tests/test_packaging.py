"""Packaging and set-up checks: pyproject.toml, environment.yml, the README's commands, CI and the book's table of contents."""

import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# A pip requirement such as "torch==2.13.0" or "jupyter-book>=1,<2": (name, version specifier).
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*?)\s*$")
# An editable install of this repository with extras, such as "-e .[book,test]".
EDITABLE_SELF = re.compile(r"^-e\s+\.(?:\[([^\]]*)\])?$")


def _canonical(name: str) -> str:
    """Normalise a distribution name as PEP 503 does (case, '-', '_', '.')."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse_requirement(line: str) -> tuple[str, str]:
    match = REQUIREMENT.match(line.split(";")[0])
    assert match, f"cannot parse requirement {line!r}"
    return _canonical(match.group(1)), match.group(2).replace(" ", "")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _pip_section(environment: dict) -> list[str]:
    sections = [dep["pip"] for dep in environment["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    assert len(sections) == 1, "environment.yml needs exactly one pip: section"
    return sections[0]


def test_environment_installs_the_package_with_every_extra(pyproject, environment):
    editable = [m for line in _pip_section(environment) if (m := EDITABLE_SELF.match(line.strip()))]
    assert len(editable) == 1, "environment.yml's pip section must install this package once with `-e .[extras]`"
    extras = {e.strip() for e in (editable[0].group(1) or "").split(",") if e.strip()}
    assert extras == set(pyproject["project"]["optional-dependencies"])


def test_environment_pins_agree_with_pyproject(pyproject, environment):
    """Any requirement environment.yml lists by name must carry pyproject's exact specifier."""
    declared = dict(_parse_requirement(r) for r in pyproject["project"]["dependencies"])
    for extra in pyproject["project"]["optional-dependencies"].values():
        declared.update(_parse_requirement(r) for r in extra)
    for line in _pip_section(environment):
        if EDITABLE_SELF.match(line.strip()):
            continue
        name, spec = _parse_requirement(line)
        assert name in declared, f"environment.yml installs {name}, which pyproject.toml does not declare"
        assert spec == declared[name], f"{name}: environment.yml says {spec!r}, pyproject.toml says {declared[name]!r}"


def test_environment_python_satisfies_requires_python(pyproject, environment):
    pythons = [d for d in environment["dependencies"] if isinstance(d, str) and re.match(r"python\s*[=<>]", d)]
    assert len(pythons) == 1
    version = tuple(int(p) for p in re.search(r"(\d+)\.(\d+)", pythons[0]).groups())
    minimum = tuple(int(p) for p in re.search(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"]).groups())
    assert version >= minimum


def _readme_commands(script: str) -> list[str]:
    """Lines of the README's code blocks that run `script`."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if script in line]


def test_readme_shows_the_two_commands():
    assert _readme_commands("scripts/test.sh")[0] == "bash scripts/test.sh"
    assert _readme_commands("scripts/book.sh")[0] == "bash scripts/book.sh"


def test_ci_runs_exactly_the_readme_test_command():
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK), ".ci/run must be executable"
    commands = [line.strip() for line in ci.read_text().splitlines() if "scripts/" in line and not line.lstrip().startswith("#")]
    assert commands == ["exec " + _readme_commands("scripts/test.sh")[0]]


def _toc_files(entry) -> list[str]:
    """Every `root`/`file` value in a _toc.yml tree."""
    if isinstance(entry, list):
        return [f for item in entry for f in _toc_files(item)]
    if isinstance(entry, dict):
        own = [entry[key] for key in ("root", "file") if key in entry]
        return own + [f for value in entry.values() if isinstance(value, (list, dict)) for f in _toc_files(value)]
    return []


def test_toc_references_only_existing_files():
    files = _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    assert files, "_toc.yml lists no files"
    for name in files:
        path = ROOT / name
        candidates = [path] if path.suffix in {".md", ".ipynb"} else [path.with_suffix(".md"), path.with_suffix(".ipynb")]
        assert any(c.is_file() for c in candidates), f"_toc.yml references {name}, which does not exist"


def test_bibliography_files_exist():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    for bib in config.get("bibtex_bibfiles", []):
        assert (ROOT / bib).is_file(), f"_config.yml names {bib}, which does not exist"


def _paired_notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "book").glob("*.md") if re.search(r"formats:\s*ipynb,md:myst", p.read_text()))


@pytest.mark.parametrize("markdown", _paired_notebooks(), ids=lambda p: p.name)
def test_paired_notebook_is_in_sync(markdown):
    """Each Jupytext .md chapter has an .ipynb twin with the same cells (run `jupytext --sync` after editing)."""
    jupytext = pytest.importorskip("jupytext")
    notebook = markdown.with_suffix(".ipynb")
    assert notebook.is_file(), f"{notebook.name} is missing: run jupytext --sync book/{markdown.name}"

    def cells(path):
        return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in jupytext.read(path).cells]

    assert cells(markdown) == cells(notebook), f"{notebook.name} is out of sync: run jupytext --sync book/{markdown.name}"


def test_no_absolute_machine_paths_in_project_files():
    skip = {".git", ".venv", "_build", "results", "runs", ".pytest_cache", ".device"}
    suffixes = {".py", ".md", ".yml", ".yaml", ".toml", ".sh", ".cfg", ".txt", ".bib"}
    offenders = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.suffix in suffixes or path.parent.name == ".ci":
                text = path.read_text(errors="replace")
                if re.search(r"(?<![\w.])/(work|root|home)/", text) and path != Path(__file__).resolve():
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"absolute machine paths in {offenders}"


def test_readme_python_example_runs(tmp_path):
    """Every ```python block of the README runs as written (in a scratch folder)."""
    import re
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README shows a Python example"
    for block in blocks:
        script = tmp_path / "example.py"
        script.write_text("import torch\ntorch.set_num_threads(1)\n" + block)
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
