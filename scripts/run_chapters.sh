#!/usr/bin/env bash
# Re-execute chapters and store their outputs in the paired .ipynb (what nbval checks in CI).
# Usage: bash scripts/run_chapters.sh [book/NN_chapter.md ...]   (default: every numbered chapter)
# Each chapter runs with its default parameters (committed results + small live demonstrations).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"   # cds to the repository root
export PYTHONHASHSEED=0
chapters=("$@")
[ ${#chapters[@]} -gt 0 ] || chapters=(book/[0-9][0-9]_*.md)
for md in "${chapters[@]}"; do
    nb="${md%.md}.ipynb"
    echo ">> $md"
    # the .md is the source: the notebook is made from it afresh (papermill fills every output).
    # `jupytext --sync` would keep the old notebook's cell metadata (tags such as remove-input).
    jupytext --to ipynb "$md" >/dev/null
    papermill --cwd book "$nb" "$nb" --log-level WARNING
    jupytext --sync "$md" >/dev/null   # keep the pair's timestamps in order
done
