#!/usr/bin/env bash
# Makes sure a headless Chromium is on PATH for tests/test_book_rendering.py (the browser test of the
# book's rendering). Idempotent: does nothing when a Chromium is already there (the names the test
# looks for); otherwise installs Debian's chromium package with apt-get (root, or sudo without a
# password), about a minute on a fresh machine. Called by scripts/test.sh; also `bash scripts/_chromium.sh`.
# CXVAE_NO_CHROMIUM_INSTALL=1 skips the install: the browser test then skips, or fails on CI (CI set).
# A failed install fails this script on CI and only warns elsewhere.

for browser in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$browser" >/dev/null 2>&1; then exit 0; fi
done

give_up() {
    echo "warning: $1; tests/test_book_rendering.py needs Chromium (it skips without one, fails on CI)" >&2
    case "${CI:-}" in ""|0|false|no) exit 0 ;; *) exit 1 ;; esac
}

if [ -n "${CXVAE_NO_CHROMIUM_INSTALL:-}" ]; then give_up "CXVAE_NO_CHROMIUM_INSTALL is set, not installing Chromium"; fi
if ! command -v apt-get >/dev/null 2>&1; then give_up "no Chromium on PATH and no apt-get to install it"; fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
        give_up "no Chromium on PATH, and installing it needs root (or sudo without a password)"
    fi
fi

echo ">> installing chromium with apt-get (for tests/test_book_rendering.py)"
# The lock timeout waits for another apt-get (a parallel run, say) instead of failing at once.
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q)
"${apt[@]}" update || echo "warning: apt-get update failed; trying the install with the current lists" >&2
"${apt[@]}" install -y --no-install-recommends chromium fonts-dejavu-core || give_up "apt-get install chromium failed"
command -v chromium >/dev/null 2>&1 || give_up "chromium is still not on PATH after apt-get install"
