#!/usr/bin/env bash
# THE test command (README): set up .venv, then run the test suite.
# Extra arguments go to the unit-test pytest run, e.g. `bash scripts/test.sh tests/test_packaging.py -x`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"   # cds to the repository root

run_pytest() {
    # pytest exits 5 when it collects no tests; that is a broken suite, not a pass.
    local rc=0
    python -m pytest "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi
    return "$rc"
}

echo ">> unit tests"
run_pytest "$@"

# >> NOTEBOOK TIER GOES HERE: run the book's chapters (smoke scale) with nbval, one line, e.g.
# echo ">> chapters (nbval)"; run_pytest --nbval-lax book/*.ipynb

echo ">> all tests passed"
