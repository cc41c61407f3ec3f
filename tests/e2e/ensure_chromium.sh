#!/bin/sh
# Make sure Debian's headless Chromium is installed for tests/e2e/test_browser.py (driven over
# the DevTools protocol: no driver needed). Exits 0 when `chromium` is on PATH (already there,
# or installed now) and non-zero when it cannot be installed: `make test` stops then, and the
# browser test never skips. Needs root (CI containers) or sudo.
set -eu
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "ensure_chromium: chromium is missing and this is not root (no sudo): run 'apt-get install chromium'" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: chromium is missing and there is no apt-get: install Chromium yourself" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
    # The package lists may be missing or stale: refresh them once and try again.
    $SUDO apt-get update -qq || { echo "ensure_chromium: apt-get update failed" >&2; exit 1; }
    $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null || {
        echo "ensure_chromium: apt-get install chromium failed" >&2; exit 1; }
fi
command -v chromium >/dev/null 2>&1 || { echo "ensure_chromium: chromium still not on PATH" >&2; exit 1; }
echo "ensure_chromium: installed $(chromium --version 2>/dev/null | head -n1)"
