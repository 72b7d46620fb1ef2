#!/usr/bin/env bash
# The test command (README; .ci/run runs exactly this on a clean clone). Steps, in order, lints
# first so a formatting or clippy slip fails in minutes:
#   fmt-main, fmt-benches, fmt-fuzz        cargo fmt --all --check, for the main workspace and
#                                          for benches/ and fuzz/ (workspaces of their own)
#   clippy-main, clippy-benches, clippy-fuzz
#                                          cargo clippy --workspace --all-targets -- -D warnings
#   clippy-server-bare                     the server with no optional feature (no engine, no
#                                          pitr): cargo clippy -p kv-connect-server
#                                          --no-default-features --all-targets -- -D warnings
#   test                                   cargo test --workspace --no-fail-fast: every crate's
#                                          unit, integration, conformance, real-client (Deno and
#                                          @deno/kv from npm), web console in a real browser
#                                          (Debian's chromium, playwright-core from npm; its
#                                          screenshots stay in target/test-artifacts/console/),
#                                          backup (a moto S3 server from PyPI) and crash tests
#   node                                   the Node package kv-node/: npm ci (its install script
#                                          builds the addon with cargo, debug profile, in target/)
#                                          then node --test (test/*.test.mjs)
#   fuzz-smoke                             scripts/fuzz-smoke.sh: every fuzz target replays its
#                                          checked-in seeds, then a fixed-seed, fixed-count run
#                                          (the same inputs every time)
# Test tools are installed on first use into the ignored .kv-test-tools/ (cargo-fuzz into
# ~/.cargo/bin).
#
# Usage: scripts/test.sh [STEP...]   (default: every step; e.g. `scripts/test.sh clippy-main test`)
#
# Every step's output goes to the terminal and to target/test-logs/<step>.log (the fuzz runs'
# logs to target/test-logs/fuzz/). The first failing step stops the run; the script then prints
# the step, the end of its log (and, for `test`, every failing test's output), the log's path,
# any new fuzz artifact (fuzz/artifacts/…) and the command that reproduces the step, so a CI
# printout alone shows the cause. It always ends with one line per step and its duration.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

all_steps=(fmt-main fmt-benches fmt-fuzz clippy-main clippy-benches clippy-fuzz clippy-server-bare test node fuzz-smoke)
if [ $# -gt 0 ]; then steps=("$@"); else steps=("${all_steps[@]}"); fi

logs="$root/target/test-logs"
rm -rf "$logs"
mkdir -p "$logs"
# benches/ and fuzz/ are linted in the main target dir: the dependencies they share with the
# main workspace are checked once.
lint_target_dir="$root/target"

# The command that reproduces one step, from the repository root.
step_command() {
  case "$1" in
    fmt-main) echo "cargo fmt --all --check" ;;
    fmt-benches) echo "(cd benches && cargo fmt --all --check)" ;;
    fmt-fuzz) echo "(cd fuzz && cargo fmt --all --check)" ;;
    clippy-main) echo "cargo clippy --workspace --all-targets -- -D warnings" ;;
    clippy-benches) echo "(cd benches && cargo clippy --workspace --all-targets -- -D warnings)" ;;
    clippy-fuzz) echo "(cd fuzz && cargo clippy --workspace --all-targets -- -D warnings)" ;;
    clippy-server-bare) echo "cargo clippy -p kv-connect-server --no-default-features --all-targets -- -D warnings" ;;
    test) echo "cargo test --workspace --no-fail-fast" ;;
    node) echo "(cd kv-node && npm ci --no-audit --no-fund && npm test)" ;;
    fuzz-smoke) echo "scripts/fuzz-smoke.sh" ;;
    *) return 1 ;;
  esac
}

run_step_command() {
  case "$1" in
    fmt-main) cargo fmt --all --check ;;
    fmt-benches) cd benches && cargo fmt --all --check ;;
    fmt-fuzz) cd fuzz && cargo fmt --all --check ;;
    clippy-main) cargo clippy --workspace --all-targets -- -D warnings ;;
    clippy-benches)
      cd benches && CARGO_TARGET_DIR="$lint_target_dir" cargo clippy --workspace --all-targets -- -D warnings
      ;;
    clippy-fuzz)
      cd fuzz && CARGO_TARGET_DIR="$lint_target_dir" cargo clippy --workspace --all-targets -- -D warnings
      ;;
    clippy-server-bare) cargo clippy -p kv-connect-server --no-default-features --all-targets -- -D warnings ;;
    test) cargo test --workspace --no-fail-fast ;;
    node) cd kv-node && npm ci --no-audit --no-fund && npm test ;;
    fuzz-smoke) FUZZ_LOG_DIR="$logs/fuzz" scripts/fuzz-smoke.sh ;;
  esac
}

for s in "${steps[@]}"; do
  step_command "$s" >/dev/null || {
    echo "test.sh: unknown step '$s' (steps: ${all_steps[*]})" >&2
    exit 2
  }
done

summary=()
print_summary() {
  echo
  echo "test.sh: summary (total $(($(date +%s) - run_started))s; logs in target/test-logs/):"
  for line in "${summary[@]}"; do echo "  $line"; done
}

# Everything the next person needs to see, at the end of the printout.
report_failure() {
  local step="$1" status="$2" log="$3" stamp="$4" artifacts
  echo
  echo "=================================================================================="
  echo "test.sh: step '$step' FAILED (exit $status)"
  echo "=================================================================================="
  if [ "$step" = test ]; then
    echo "--- failing tests ---"
    grep -E '^test .* \.\.\. FAILED$|^error: test failed|^    `-p ' "$log" || true
    echo "--- their output (first 200 lines) ---"
    awk '/^---- .* (stdout|stderr) ----$/ {on=1} /^failures:$/ && on {on=0} on' "$log" | head -n 200 || true
  fi
  echo "--- last 60 lines of $log ---"
  tail -n 60 "$log"
  echo "--- end of log ---"
  echo "log: $log"
  artifacts=$(find "$root/fuzz/artifacts" -type f -newer "$stamp" 2>/dev/null | sort || true)
  if [ -n "$artifacts" ]; then
    echo "fuzz artifacts written by this run (replay: see the fuzz-smoke lines above):"
    echo "$artifacts" | sed 's/^/  /'
  fi
  echo "reproduce: $(step_command "$step")"
}

echo "test.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(rustc --version), $(nproc 2>/dev/null || echo '?') cores, CI=${CI:-}"
run_started=$(date +%s)
failed_step=""
for s in "${steps[@]}"; do
  if [ -n "$failed_step" ]; then
    summary+=("$(printf '%-15s %-8s' "$s" skipped)")
    continue
  fi
  log="$logs/$s.log"
  stamp="$logs/.$s.started"
  touch "$stamp"
  echo
  echo "==> test.sh [$s] $(step_command "$s")   ($(date -u +%H:%M:%S))"
  started=$(date +%s)
  status=0
  (run_step_command "$s") 2>&1 | tee "$log" || status=$?
  took=$(($(date +%s) - started))
  if [ "$status" -eq 0 ]; then
    summary+=("$(printf '%-15s %-8s %5ss' "$s" ok "$took")")
  else
    summary+=("$(printf '%-15s %-8s %5ss   log: %s' "$s" FAILED "$took" "$log")")
    failed_step="$s"
    report_failure "$s" "$status" "$log" "$stamp"
  fi
done

print_summary
if [ -n "$failed_step" ]; then
  echo "test.sh: FAILED at step '$failed_step'; reproduce: $(step_command "$failed_step")"
  exit 1
fi
echo "test.sh: all steps passed"
