#!/usr/bin/env python3
"""Strict build of the book from the chapters' stored outputs: nothing is executed.

`bash scripts/book.sh` re-executes every chapter (minutes). This builds the book as committed, from
the outputs stored in each chapter's paired `.ipynb`, with warnings as errors (-W) and broken
references flagged (-n), so that a broken `literalinclude`, cross-reference, citation or figure
fails CI cheaply (6-11 s on a 2-core CPU). tests/test_book_build.py runs it on the working tree (scripts/test.sh).

In a scratch copy (the tree itself is never touched):

1. Copy the tree. In a git work tree: the tracked files and the untracked ones git does not ignore,
   as they are on disk, so uncommitted edits are built too (deleted files are left out). Elsewhere:
   every file except .git, .venv, _build and caches.
2. Delete every `book/*.md` that has an `.ipynb` twin, so the notebook, with its stored outputs, is
   the document. `book/intro.md` and any `.md` without a twin stay. (Left in place with execution
   off, the `.md` would be read without outputs and every `glue` would fail.)
3. In the copy's `_config.yml`, drop the `book/*.ipynb` exclusion and set `execute_notebooks: "off"`.
4. Check that every `_toc.yml` entry resolves to exactly one source file (the toc names files
   without extension, so `book/11_optimality_gap` must now be the `.ipynb`).
5. `jupyter-book build COPY --config COPY/_config.yml -W -n --keep-going`.

Usage:  python scripts/book_from_outputs.py [--source DIR] [--workdir DIR]
        --source   the tree to build (default: this repository's working tree)
        --workdir  where to put the copy and its _build/ (default: a temporary folder, removed
                   afterwards); must not exist yet

Run it with the venv's Python (`.venv/bin/python`): `jupyter-book` is looked up next to the
interpreter first, then on PATH. Exit status: jupyter-book's (0: built without a warning), 2 for a
toc entry that does not resolve. Needs only the standard library, PyYAML and jupyter-book (the
[book] extra); it does not import cxvae.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "_build", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".jupyter_cache"}
SOURCE_SUFFIXES = (".md", ".ipynb", ".rst")


def _tree_files(source: Path) -> list[Path]:
    """The files to copy, relative to source (see step 1)."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, check=True)
        top = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        listed, top = None, None
    if listed is not None and Path(top).resolve() == source.resolve():
        names = sorted({name for name in listed.stdout.decode().split("\0") if name})
        return [Path(name) for name in names if (source / name).is_file()]
    return [path.relative_to(source) for path in sorted(source.rglob("*"))
            if path.is_file() and not SKIP.intersection(path.relative_to(source).parts)]


def copy_tree(source: Path, copy: Path) -> None:
    """Step 1: copy source's files into copy (which may exist)."""
    for rel in _tree_files(source):
        target = copy / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target)


def prepare(copy: Path) -> list[str]:
    """Steps 2-4 on a copied tree; returns the problems found (empty: ready to build)."""
    for markdown in sorted((copy / "book").glob("*.md")):
        if markdown.with_suffix(".ipynb").exists():
            markdown.unlink()

    config_path = copy / "_config.yml"
    config = yaml.safe_load(config_path.read_text())
    config["exclude_patterns"] = [p for p in config.get("exclude_patterns", []) if p != "book/*.ipynb"]
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    problems = []
    for entry in _toc_files(yaml.safe_load((copy / "_toc.yml").read_text())):
        path = copy / entry
        found = [path] if path.suffix in SOURCE_SUFFIXES else [path.with_suffix(s) for s in SOURCE_SUFFIXES]
        found = [p for p in found if p.is_file()]
        if len(found) != 1:
            problems.append(f"_toc.yml entry {entry!r} resolves to {len(found)} source files: "
                            f"{[str(p.relative_to(copy)) for p in found]}")
    return problems


def _toc_files(node) -> list[str]:
    """Every `root` and `file` named anywhere in a _toc.yml."""
    if isinstance(node, dict):
        own = [node[key] for key in ("root", "file") if isinstance(node.get(key), str)]
        return own + [f for value in node.values() for f in _toc_files(value)]
    if isinstance(node, list):
        return [f for item in node for f in _toc_files(item)]
    return []


def build(copy: Path) -> int:
    """Step 5; jupyter-book's output goes to this process's stdout and stderr."""
    local = Path(sys.executable).with_name("jupyter-book")
    command = [str(local) if local.exists() else "jupyter-book", "build", str(copy),
               "--config", str(copy / "_config.yml"), "-W", "-n", "--keep-going"]
    sys.stdout.flush()
    return subprocess.run(command).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the tree to build (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, help="where to put the copy (must not exist; default: a "
                                                     "temporary folder, removed afterwards)")
    args = parser.parse_args(argv)

    scratch = None
    if args.workdir is None:
        scratch = tempfile.TemporaryDirectory(prefix="cxvae-book-")
        copy = Path(scratch.name) / "book-copy"
    else:
        copy = args.workdir
        if copy.exists():
            parser.error(f"--workdir {copy} exists; give a new folder")
    try:
        print(f">> copying {args.source} to {copy}", flush=True)
        copy_tree(args.source.resolve(), copy)
        problems = prepare(copy)
        if problems:
            print("error: " + "\nerror: ".join(problems), file=sys.stderr)
            return 2
        print(">> strict build from stored outputs (execution off, -W -n --keep-going)", flush=True)
        returncode = build(copy)
        if returncode != 0:
            print(f"error: the strict book build failed (exit {returncode}); in the warnings above, {copy} "
                  f"stands for {args.source.resolve()}, and book/*.ipynb for the chapters' paired .md "
                  "(edit the .md, then `jupytext --sync` it)", file=sys.stderr)
        return returncode
    finally:
        if scratch is not None:
            scratch.cleanup()


if __name__ == "__main__":
    sys.exit(main())
