#!/usr/bin/env bash
# The whole test suite: every crate's unit, integration, conformance, real-client (Deno and
# @deno/kv from npm), backup (a moto S3 server from PyPI) and crash tests, then a short run of
# every fuzz target (FUZZ_SECONDS each, default 30). Test tools are installed on first use into
# the ignored .kv-test-tools/ (and cargo-fuzz into ~/.cargo/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
scripts/fuzz-smoke.sh
