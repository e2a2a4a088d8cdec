"""The book's chapters: anatomy (CONTRIBUTING.md) and a full re-run at smoke scale.

The stored outputs of each chapter's default run are checked separately by nbval (the second
stage of ``scripts/test.sh``). Here every chapter is re-executed by papermill with
``RECOMPUTE=True, SMOKE=True``, so the whole pipeline from training to figure runs in CI.
"""
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(p for p in BOOK.glob("[0-9][0-9]_*.md") if not p.name.startswith("00_"))


def _code_cells(text: str):
    return re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_anatomy(chapter):
    """Label and title, run note, question with the paper's claim, overview, parameters cell,
    takeaways with glued numbers, what's next and references."""
    text = chapter.read_text()
    assert re.search(r"^\(\S+\)=\n# \d+\. ", text, flags=re.M), "label + numbered title"
    assert re.search(r"(:::|```)\{(tip|admonition)\} Run this chapter", text), "run-this-chapter note"
    assert "## The question" in text and re.search(r"The paper says \(C\d", text), "the claim, quoted"
    assert "## Overview" in text
    params = [c for c in _code_cells(text) if re.search(r"^:tags: \[parameters\]", c, flags=re.M)]
    assert len(params) == 1, "exactly one parameters cell"
    for name in ("SMOKE", "RECOMPUTE", "DEVICE"):
        assert re.search(rf"^{name} = ", params[0], flags=re.M), f"parameters cell defines {name}"
    takeaways = text.split("## Takeaways", 1)
    assert len(takeaways) == 2, "a Takeaways section"
    assert "{glue:text}" in takeaways[1].split("## What's next")[0], "takeaways quote numbers from code"
    assert "## What's next" in text and "{bibliography}" in text


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_cells_are_short(chapter):
    """No code cell longer than ~15 lines: longer code belongs in the library."""
    for cell in _code_cells(chapter.read_text()):
        lines = [ln for ln in cell.splitlines() if ln.strip() and not ln.startswith(":")]
        assert len(lines) <= 18, f"a {len(lines)}-line cell in {chapter.name}:\n{cell[:300]}"


def test_the_results_paths_are_defined_once_in_cxvae_chapters(monkeypatch):
    """cxvae.chapters holds the committed results folder seen from book/ and the scratch folder
    ($CXVAE_SCRATCH, else ../runs; an explicit scratch_root first), and every load-or-recompute
    helper reads RESULTS by default."""
    import inspect

    from cxvae import chapters

    monkeypatch.delenv("CXVAE_SCRATCH", raising=False)
    assert chapters.RESULTS == "../results" and chapters.scratch_folder() == Path("../runs")
    monkeypatch.setenv("CXVAE_SCRATCH", "/somewhere")
    assert chapters.scratch_folder() == Path("/somewhere") and chapters.scratch_folder("here") == Path("here")
    helpers = [getattr(chapters, n) for n in chapters.__all__ if n.startswith("load_")]
    assert len(helpers) == 11  # the ten of chapters 2-11, and chapter 9's held-back diagnostic (load_held_back)
    for helper in helpers:
        assert inspect.signature(helper).parameters["results_root"].default == chapters.RESULTS, helper.__name__


SCRATCH = ROOT / "runs" / "ci-smoke"


@pytest.fixture(scope="module")
def fresh_scratch():
    """One scratch folder shared by this session's chapter runs, emptied first: rows left by an
    earlier session (perhaps by older code) must not stand in for this code's results."""
    shutil.rmtree(SCRATCH, ignore_errors=True)
    return SCRATCH


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_reruns_from_scratch_at_smoke_scale(chapter, tmp_path, monkeypatch, fresh_scratch):
    """papermill re-runs the chapter with RECOMPUTE=True, SMOKE=True (training to figure)."""
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("CXVAE_SCRATCH", str(fresh_scratch))  # shared: chapters reuse rows
    notebook = chapter.with_suffix(".ipynb")
    parameters = dict(RECOMPUTE=True, SMOKE=True, DEVICE="cpu")
    if re.search(r"^SEEDS = ", chapter.read_text(), flags=re.M):
        parameters["SEEDS"] = "0-1"  # two seeds are enough to exercise intervals and box plots
    papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), cwd=str(BOOK),
                               parameters=parameters,
                               progress_bar=False, kernel_name="python3")
