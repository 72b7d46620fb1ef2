#!/usr/bin/env bash
# Regenerates kv-v8/tests/vectors/vectors.json with the real runtimes: Deno 2.9.6 (installed
# by scripts/install-test-clients.sh) and the machine's Node (v8.serialize).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$("$here/../../../scripts/install-test-clients.sh")"
deno="$(sed -n 's/^DENO=//p' <<<"$tools")"
DENO_DIR="$(sed -n 's/^DENO_DIR=//p' <<<"$tools")"
export DENO_DIR
node="$(sed -n 's/^NODE=//p' <<<"$tools")"
exec "$node" "$here/generate.mjs" --deno "$deno" "$@"
