#!/usr/bin/env bash
# Installs what the browser test of the web console needs
# (kv-connect-server/tests/console.rs):
#   - Debian's `chromium` package (/usr/bin/chromium), with apt-get, only when it is missing
#     (as root, or through passwordless sudo; otherwise it stops and says what to run)
#   - the `playwright-core` npm package (pinned), which drives that Chromium; it never downloads
#     a browser of its own (there is no `playwright install` step)
# into an ignored folder (default: <repo>/.kv-test-tools/playwright, override the parent with
# KV_TEST_TOOLS_DIR). Only Debian's archive and the npm registry are contacted, and only when
# something is missing; a second run does nothing.
#
# On success it prints, one per line:
#   CHROMIUM=<path of the chromium binary>
#   PLAYWRIGHT_CORE=<path of the playwright-core package folder>
#   NODE=<path of node>
# and exits 0. On failure it prints a clear message on stderr and exits 1.
set -euo pipefail

PLAYWRIGHT_CORE_VERSION=1.64.1
CHROMIUM=/usr/bin/chromium

die() {
  echo "install-browser: ERROR: $*" >&2
  exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${KV_TEST_TOOLS_DIR:-$repo_root/.kv-test-tools}/playwright"

command -v node >/dev/null 2>&1 || die "node is not installed (needed to run Playwright); install Node.js >= 18"
command -v npm >/dev/null 2>&1 || die "npm is not installed; install npm (it comes with Node.js)"

chromium_works() {
  [ -x "$CHROMIUM" ] && "$CHROMIUM" --version >/dev/null 2>&1
}

if ! chromium_works; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    die "$CHROMIUM is missing and this user cannot install packages; run: sudo apt-get install -y chromium"
  fi
  command -v apt-get >/dev/null 2>&1 || die "$CHROMIUM is missing and apt-get is not available (Debian's chromium package is what the test drives)"
  echo "install-browser: installing Debian's chromium package" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt run (e.g. the PostgreSQL test server's install) instead of failing.
  apt_opts=(-o DPkg::Lock::Timeout=600 -q)
  if ! "${as_root[@]}" apt-get "${apt_opts[@]}" install -y --no-install-recommends chromium >&2; then
    "${as_root[@]}" apt-get "${apt_opts[@]}" update >&2 || die "apt-get update failed"
    "${as_root[@]}" apt-get "${apt_opts[@]}" install -y --no-install-recommends chromium >&2 ||
      die "apt-get install chromium failed"
  fi
  chromium_works || die "$CHROMIUM does not run after installing the chromium package"
fi

installed() {
  local dir="$1"
  [ "$(node -p "require('$dir/node_modules/playwright-core/package.json').version" 2>/dev/null)" = "$PLAYWRIGHT_CORE_VERSION" ]
}

if ! installed "$tools"; then
  echo "install-browser: installing playwright-core@$PLAYWRIGHT_CORE_VERSION into $tools" >&2
  mkdir -p "$(dirname "$tools")"
  staging="$(mktemp -d "$(dirname "$tools")/.playwright.staging.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  # An exact pin, no lockfile, no package.json written, no install scripts (playwright-core has
  # no dependencies and needs none).
  if ! npm install --prefix "$staging" --no-save --no-package-lock --ignore-scripts \
    --no-audit --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2; then
    die "npm install playwright-core failed (is the npm registry reachable? npm registry: $(npm config get registry 2>/dev/null))"
  fi
  installed "$staging" || die "playwright-core $PLAYWRIGHT_CORE_VERSION is not in $staging after npm install"
  if ! installed "$tools"; then
    rm -rf "$tools"
    mv "$staging" "$tools" || installed "$tools" || die "could not move the installation into $tools"
  fi
  rm -rf "$staging"
  trap - EXIT
fi

echo "CHROMIUM=$CHROMIUM"
echo "PLAYWRIGHT_CORE=$tools/node_modules/playwright-core"
echo "NODE=$(command -v node)"
