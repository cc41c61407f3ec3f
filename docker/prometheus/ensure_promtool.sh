#!/usr/bin/env bash
# Make sure `promtool` (and `prometheus`) are on PATH: the alert-rule tests and the
# end-to-end Prometheus test need them. Installs Debian's `prometheus` package when
# missing and we may (root + apt-get); otherwise says why and exits 1.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure_promtool: promtool is missing and this is not root: run 'sudo apt-get install -y prometheus'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_promtool: promtool is missing and there is no apt-get: install Prometheus (promtool) yourself" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; then
  # The package lists may be missing or stale: refresh them once and try again.
  apt-get update -q >/dev/null 2>&1 || true
  if ! apt-get install -y -q --no-install-recommends prometheus >/dev/null; then
    echo "ensure_promtool: apt-get install prometheus failed" >&2
    exit 1
  fi
fi
# The Debian package starts a service under systemd only; nothing to stop here.
command -v promtool >/dev/null 2>&1 || { echo "ensure_promtool: promtool still not on PATH" >&2; exit 1; }
echo "ensure_promtool: installed $(promtool --version 2>&1 | head -n1)"
