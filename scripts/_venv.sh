# Shared set-up for scripts/test.sh and scripts/book.sh; meant to be sourced, not run.
#
# Creates a virtual environment at .venv (if missing) and installs this package into it
# with `pip install -e ".[book,test]"`, but only when pyproject.toml has changed since the
# last install (its hash is kept in .venv/.cxvae-installed). Then puts .venv/bin first on
# PATH and registers the venv's Python as the Jupyter kernel "python3", so that Jupyter Book,
# papermill and nbval run the notebooks with this environment.
#
# Environment variables: PYTHON (interpreter used to create the venv; default python3.11,
# else python3), CXVAE_VENV (venv location; default .venv).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV="${CXVAE_VENV:-.venv}"
STAMP="$VENV/.cxvae-installed"

if [ ! -x "$VENV/bin/python" ]; then
    base_python="${PYTHON:-}"
    if [ -z "$base_python" ]; then
        if command -v python3.11 >/dev/null 2>&1; then base_python=python3.11; else base_python=python3; fi
    fi
    if ! "$base_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: $base_python is older than Python 3.11; set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    echo ">> creating virtual environment $VENV with $base_python"
    "$base_python" -m venv "$VENV"
fi

export VIRTUAL_ENV="$REPO_ROOT/$VENV"
case "$VENV" in /*) VIRTUAL_ENV="$VENV" ;; esac
export PATH="$VIRTUAL_ENV/bin:$PATH"
hash -r

# The stamp records what was installed: pyproject.toml's content and the venv's Python.
wanted="$(python -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest(), sys.version.split()[0])')"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$wanted" ]; then
    echo ">> installing cxvae with extras [book,test] into $VENV (pyproject.toml changed or first run)"
    python -m pip install -e ".[book,test]"
    python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cxvae)"
    printf '%s\n' "$wanted" > "$STAMP"
else
    echo ">> $VENV is up to date with pyproject.toml"
fi
