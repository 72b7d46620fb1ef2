#!/usr/bin/env bash
# Installs the real KV clients used by the end-to-end tests
# (kv-connect-server/tests/real_clients.rs):
#   - the Deno runtime 2.9.6 (npm package `deno`, whose binary ships in the
#     platform package `@deno/<platform>`, e.g. `@deno/linux-x64-glibc`)
#   - the `@deno/kv` 0.14.0 npm client (run on the machine's Node)
# into an ignored folder (default: <repo>/.kv-test-tools, override with
# KV_TEST_TOOLS_DIR). Only the npm registry is contacted, and only when the
# pinned versions are not installed yet; a second run does nothing.
#
# On success it prints, one per line:
#   DENO=<path of the deno binary>
#   DENO_KV_NPM_ENTRY=<path of @deno/kv's ESM entry>
#   DENO_DIR=<deno cache dir inside the tools folder>
#   NODE=<path of node>
# and exits 0. On failure it prints a clear message on stderr and exits 1.
set -euo pipefail

DENO_VERSION=2.9.6
DENO_KV_NPM_VERSION=0.14.0

die() {
  echo "install-test-clients: ERROR: $*" >&2
  exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${KV_TEST_TOOLS_DIR:-$repo_root/.kv-test-tools}"

command -v node >/dev/null 2>&1 || die "node is not installed (needed to run @deno/kv and npm); install Node.js >= 18"
command -v npm >/dev/null 2>&1 || die "npm is not installed; install npm (it comes with Node.js)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "Node.js >= 18 is required, found $(node --version)"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) deno_pkg="@deno/linux-x64-glibc" ;;
  Linux-aarch64 | Linux-arm64) deno_pkg="@deno/linux-arm64-glibc" ;;
  Darwin-x86_64) deno_pkg="@deno/darwin-x64" ;;
  Darwin-arm64) deno_pkg="@deno/darwin-arm64" ;;
  *) die "unsupported platform $(uname -s)-$(uname -m) for the Deno npm binary packages" ;;
esac

deno_bin() { echo "$1/node_modules/$deno_pkg/deno"; }
npm_entry() { echo "$1/node_modules/@deno/kv/esm/npm.js"; }

# Is a complete, pinned installation present in folder $1?
installed() {
  local dir="$1" bin entry
  bin="$(deno_bin "$dir")"
  entry="$(npm_entry "$dir")"
  [ -x "$bin" ] && [ -f "$entry" ] || return 1
  "$bin" --version 2>/dev/null | head -n1 | grep -qx "deno $DENO_VERSION (.*)" || return 1
  [ "$(node -p "require('$dir/node_modules/@deno/kv/package.json').version" 2>/dev/null)" = "$DENO_KV_NPM_VERSION" ] || return 1
  return 0
}

if ! installed "$tools"; then
  echo "install-test-clients: installing deno@$DENO_VERSION ($deno_pkg) and @deno/kv@$DENO_KV_NPM_VERSION into $tools" >&2
  mkdir -p "$(dirname "$tools")"
  staging="$(mktemp -d "$(dirname "$tools")/.kv-test-tools.staging.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  # Exact pins, no lockfile, no package.json written; install scripts are not
  # needed (we run the platform package's binary directly), so skip them.
  if ! npm install --prefix "$staging" --no-save --no-package-lock --ignore-scripts \
    --no-audit --no-fund --loglevel=error \
    "deno@$DENO_VERSION" "$deno_pkg@$DENO_VERSION" "@deno/kv@$DENO_KV_NPM_VERSION" >&2; then
    die "npm install failed (is the npm registry reachable? npm registry: $(npm config get registry 2>/dev/null))"
  fi
  installed "$staging" || die "installed packages are incomplete: expected $(deno_bin "$staging") to report deno $DENO_VERSION and @deno/kv $DENO_KV_NPM_VERSION"
  # Replace any stale or partial installation atomically enough for a test
  # tool folder (a concurrent run may have finished first: keep theirs). Only
  # node_modules is replaced: the folder also holds other scripts' tools
  # (playwright/, moto-venv/) and the Deno cache.
  if installed "$tools"; then
    :
  else
    mkdir -p "$tools"
    rm -rf "$tools/node_modules"
    mv "$staging/node_modules" "$tools/node_modules" || installed "$tools" || die "could not move the installation into $tools"
  fi
  rm -rf "$staging"
  trap - EXIT
fi

mkdir -p "$tools/deno-dir"
echo "DENO=$(deno_bin "$tools")"
echo "DENO_KV_NPM_ENTRY=$(npm_entry "$tools")"
echo "DENO_DIR=$tools/deno-dir"
echo "NODE=$(command -v node)"
