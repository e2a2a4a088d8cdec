#!/usr/bin/env bash
# THE book command (README): set up .venv, then build the Jupyter Book, executing every chapter
# (execute_notebooks: force in _config.yml). Warnings are errors (-W); -n flags broken references.
# Extra arguments go to `jupyter-book build`, e.g. `bash scripts/book.sh --all` for a clean rebuild.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"   # cds to the repository root

echo ">> building the book"
jupyter-book build . -W -n --keep-going "$@"
echo ">> book built: open _build/html/index.html"
