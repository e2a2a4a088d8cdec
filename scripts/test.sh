#!/usr/bin/env bash
# THE test command (README): set up .venv, then run the test suite twice, under two kernel settings.
# Extra arguments go to the unit-test pytest runs, e.g. `bash scripts/test.sh tests/test_packaging.py -x`.
#
# Another CPU (Intel or AMD, AVX2 or AVX-512) dispatches other kernels and rounds differently, so
# every check must hold whatever the kernels. The first pass runs under this machine's own kernels;
# the second under another setting (tests/kernels.py: a narrower vector width for PyTorch, MKL's
# vendor-neutral matrix products, one thread), which changes the bits of trained models' outputs
# (tests/test_portability.py proves it). The second pass skips what computes no numbers to compare:
# the chapters' papermill re-runs (nbval re-executes every chapter under it anyway), the browser
# test of the rendered book and the strict build of the book from its stored outputs
# (tests/test_book_build.py, scripts/book_from_outputs.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"   # cds to the repository root
bash scripts/_chromium.sh   # headless Chromium for tests/test_book_rendering.py (installed only when missing)

run_pytest() {
    # pytest exits 5 when it collects no tests; that is a broken suite, not a pass.
    local rc=0
    python -m pytest "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi
    return "$rc"
}

run_nbval() {
    run_pytest -p no:cacheprovider --nbval book/[0-9][0-9]_*.ipynb --nbval-sanitize-with tests/nbval_sanitize.cfg \
        --nbval-current-env -q
}

echo ">> unit tests (this CPU's own kernels)"
run_pytest "$@"

echo ">> chapters: stored outputs re-checked by nbval"
run_nbval

other="$(python tests/kernels.py)"
(
    export $other
    echo ">> unit tests again, under other kernels: $other"
    run_pytest -k "not reruns_from_scratch and not test_book_rendering and not test_book_build" "$@"
    echo ">> chapters: nbval again, under other kernels: $other"
    run_nbval
)

echo ">> all tests passed"
