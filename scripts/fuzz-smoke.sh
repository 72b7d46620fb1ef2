#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ briefly (a smoke test for CI), starting from the
# checked-in seeds (fuzz/seeds/<target>/) copied into a scratch corpus (fuzz/corpus/<target>/,
# git-ignored; it keeps growing across local runs).
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when `cargo fuzz` is missing. Works
# on a stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags.
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 30)
#   FUZZ_TARGETS    space-separated targets (default: every target, `cargo fuzz list`)
#   FUZZ_SANITIZER  address | none (default none: the code is safe Rust, and an ASAN build
#                   takes much longer; panics and the targets' assertions are the oracles)
#   FUZZ_ARGS       extra libFuzzer arguments, e.g. "-fork=2" or "-dict=…"
#
# Prints the executions of every target; exits non-zero if any target finds a crash (or a
# timeout / out-of-memory), printing the artifact path and how to reproduce it.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$repo_root/fuzz"
seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

started=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi

cd "$fuzz_dir"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
# Same flags for build and run, so `run` does not rebuild.
flags=(--sanitizer "$sanitizer" --debug-assertions)

echo "fuzz-smoke: building every target (sanitizer: $sanitizer)"
cargo fuzz build "${flags[@]}"
built=$(date +%s)

logs="$fuzz_dir/target/smoke-logs"
mkdir -p "$logs"
failed=0
summary=()
for t in $targets; do
  corpus="$fuzz_dir/corpus/$t"
  mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
  if [ -d "$fuzz_dir/seeds/$t" ]; then
    cp -n "$fuzz_dir/seeds/$t"/* "$corpus"/ 2>/dev/null || true
  fi
  log="$logs/$t.log"
  echo "fuzz-smoke: $t for ${seconds}s"
  status=0
  cargo fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=60 -rss_limit_mb=4096 \
    ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  execs="${execs:-?}"
  artifact=$(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //' | tail -1 || true)
  if [ "$status" -ne 0 ] || [ -n "$artifact" ]; then
    failed=1
    summary+=("$t: FAILED after $execs executions (exit $status)")
    echo "fuzz-smoke: $t FAILED (exit $status); last lines of $log:" >&2
    tail -n 40 "$log" >&2
    if [ -n "$artifact" ]; then
      echo "fuzz-smoke: artifact: $artifact" >&2
      echo "fuzz-smoke: reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t $artifact)" >&2
    fi
  else
    summary+=("$t: ok, $execs executions in ${seconds}s")
  fi
done

finished=$(date +%s)
echo "fuzz-smoke: summary (build $((built - started))s, total $((finished - started))s):"
for line in "${summary[@]}"; do
  echo "  $line"
done
exit "$failed"
