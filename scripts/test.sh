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

echo ">> chapters: stored outputs re-checked by nbval"
run_pytest -p no:cacheprovider --nbval book/[0-9][0-9]_*.ipynb --nbval-sanitize-with tests/nbval_sanitize.cfg \
    --nbval-current-env -q

echo ">> all tests passed"
