#!/usr/bin/env bash
# Install the Node SCIM peers (tests/scim_peers/{scimmy,better_auth}) from their lock files.
# Idempotent: a directory whose node_modules was installed from the same package-lock.json is
# left alone. Exits non-zero when node/npm is missing or an install fails (`make test` runs this).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

command -v node >/dev/null || { echo "scim_peers: node is not installed (Node.js 20 needed)" >&2; exit 1; }
command -v npm >/dev/null || { echo "scim_peers: npm is not installed" >&2; exit 1; }

for dir in scimmy better_auth; do
    peer="$here/$dir"
    stamp="$peer/node_modules/.jml-installed-lock.json"
    if [[ -f "$stamp" ]] && cmp -s "$stamp" "$peer/package-lock.json"; then
        continue
    fi
    echo "scim_peers: npm ci in tests/scim_peers/$dir" >&2
    (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$peer/package-lock.json" "$stamp"
done
