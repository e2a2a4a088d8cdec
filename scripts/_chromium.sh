#!/usr/bin/env bash
# Makes sure a headless Chromium is on PATH for tests/test_book_rendering.py (the offline-maths browser
# test). Idempotent: does nothing when `chromium` is already there; otherwise installs Debian's
# chromium package with apt-get (about a minute on a fresh machine). Run as root, or with sudo.
# Usable both sourced (from scripts/test.sh) and run (`bash scripts/_chromium.sh`).
# Set CXVAE_NO_CHROMIUM_INSTALL=1 to skip the install (the browser test then skips off CI, fails on CI).

_cxvae_install_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    if [ -n "${CXVAE_NO_CHROMIUM_INSTALL:-}" ]; then
        echo ">> chromium not found; CXVAE_NO_CHROMIUM_INSTALL is set, not installing it" >&2
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: chromium is not on PATH and apt-get is missing; install Chromium by hand" >&2
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "warning: chromium is not on PATH and this is not root (no sudo); install Chromium by hand" >&2
            return 0
        fi
    fi
    echo ">> installing chromium with apt-get (for the browser test of the book's rendering)"
    # The lock timeout waits for another apt-get (e.g. a parallel run) instead of failing at once.
    local apt=($sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q)
    "${apt[@]}" update
    "${apt[@]}" install -y --no-install-recommends chromium fonts-dejavu-core
}

_cxvae_install_chromium
