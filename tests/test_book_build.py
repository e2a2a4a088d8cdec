"""The real book builds strictly (-W -n) from the chapters' stored outputs, and that build catches breakage.

scripts/book_from_outputs.py builds a copy of the working tree with execution off, each chapter's
paired .ipynb (with its stored outputs) as the document: a broken literalinclude, cross-reference,
citation or missing figure fails it, in seconds, without the minutes of `bash scripts/book.sh`.
The first test builds the working tree as it is; the others build copies with known breakage and
check that the build fails and names each problem. Each build takes 6-11 s on a 2-core CPU.

(tests/test_book_rendering.py also builds a book with the project's _config.yml, but a toy
two-page one, to check in a browser how maths and tables render; it does not build the chapters.)

Without jupyter-book these tests skip, except on CI (CI set), where they fail.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "book_from_outputs.py"
ON_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

if not ON_CI:   # on CI the book extra is installed (scripts/test.sh): a missing one is an error there
    pytest.importorskip("jupyter_book", reason="the book extra is not installed (pip install -e .[book])")

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _script():
    spec = importlib.util.spec_from_file_location("book_from_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(*args: str) -> tuple[int, str, list[str]]:
    """Run the script; returns its exit status, its output and the build's warning lines."""
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    output = ANSI.sub("", result.stdout + result.stderr)
    return result.returncode, output, [line for line in output.splitlines() if "WARNING:" in line]


def _edit(tree: Path, rel: str, old: str, new: str) -> None:
    """Replace the one occurrence of old in a book source (in a notebook: in one cell's source)."""
    path = tree / rel
    if path.suffix != ".ipynb":
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {rel}"
        path.write_text(text.replace(old, new))
        return
    notebook = json.loads(path.read_text())
    sources = ["".join(cell["source"]) for cell in notebook["cells"]]
    hits = [i for i, source in enumerate(sources) if old in source]
    assert len(hits) == 1 and sources[hits[0]].count(old) == 1, f"{old!r} is not in exactly one cell of {rel}"
    notebook["cells"][hits[0]]["source"] = sources[hits[0]].replace(old, new)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, emptied afterwards: each copy of the tree holds results/ (tens of MB)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def tree_copy(scratch):
    """A copy of the working tree (as the script copies it), to break on purpose."""
    tree = scratch / "tree"
    _script().copy_tree(ROOT, tree)
    return tree


def test_book_builds_strictly_from_stored_outputs(scratch):
    returncode, output, warnings = _build("--workdir", str(scratch / "copy"))
    assert returncode == 0 and not warnings, "the strict book build failed:\n" + "\n".join(warnings or [output[-6000:]])
    html = scratch / "copy" / "_build" / "html" / "book"
    chapters = sorted(p.stem for p in (ROOT / "book").glob("*.ipynb"))
    missing = [c for c in chapters if not (html / f"{c}.html").is_file()]
    assert chapters and not missing, f"chapters not rendered: {missing}"


def test_a_broken_include_fails_the_strict_build(tree_copy):
    # The paired .ipynb is what the strict build reads (the .md twin is set aside).
    _edit(tree_copy, "book/01_emergent_groups.ipynb", ":pyobject: exam_scores_mean", ":pyobject: no_such_function")
    returncode, output, warnings = _build("--source", str(tree_copy))
    assert returncode != 0, "a literalinclude of a missing function built without failing"
    assert len(warnings) == 1, "expected exactly one warning:\n" + "\n".join(warnings or [output[-6000:]])
    assert "01_emergent_groups.ipynb" in warnings[0]
    assert "Object named 'no_such_function' not found in include file" in warnings[0]


def test_other_breakage_fails_the_strict_build(tree_copy):
    """A missing include file, an undefined cross-reference, an unknown citation, a missing figure."""
    _edit(tree_copy, "book/03_product_bias.ipynb", "```{literalinclude} ../cxvae/model.py\n:pyobject: Corrected",
          "```{literalinclude} ../cxvae/no_such_module.py\n:pyobject: Corrected")
    _edit(tree_copy, "book/intro.md", "<ch-gap>", "<ch-no-such-label>")
    _edit(tree_copy, "book/intro.md", "{cite:p}`cxvae2022`", "{cite:p}`no_such_key2099`")
    _edit(tree_copy, "book/intro.md", "\nEvery chapter is a notebook",
          "\n![a figure](no_such_figure.png)\n\nEvery chapter is a notebook")
    returncode, output, warnings = _build("--source", str(tree_copy))
    assert returncode != 0, "the broken book built without failing"
    expected = {"missing include file": ("03_product_bias.ipynb", "no_such_module.py"),
                "undefined cross-reference": ("intro.md", "ch-no-such-label"),
                "unknown citation": ("intro.md", "no_such_key2099"),
                "missing figure": ("intro.md", "no_such_figure.png")}
    for problem, (where, what) in expected.items():
        assert any(where in w and what in w for w in warnings), \
            f"{problem} ({what} in {where}) not reported:\n" + "\n".join(warnings or [output[-6000:]])
    assert len(warnings) == len(expected), "unexpected warnings:\n" + "\n".join(warnings)
