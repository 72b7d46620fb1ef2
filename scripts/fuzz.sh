#!/usr/bin/env bash
# Open-ended fuzzing (NOT part of the test command; scripts/fuzz-smoke.sh is the reproducible
# smoke the test command runs): every cargo-fuzz target in fuzz/ for FUZZ_SECONDS, with a random
# libFuzzer seed, on the growing corpus fuzz/corpus/<target>/ (git-ignored; the checked-in seeds
# fuzz/seeds/<target>/ are copied into it first). What it finds differs from run to run.
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when `cargo fuzz` is missing.
#
# Environment (see also scripts/fuzz-common.sh: FUZZ_TARGETS, FUZZ_SANITIZER, FUZZ_ARGS,
# FUZZ_LOG_DIR):
#   FUZZ_SECONDS  seconds per target (default 300)
#
# Prints the executions of every target; exits non-zero if any target finds a crash (or a
# timeout / out-of-memory), printing the artifact path and how to reproduce it.
set -euo pipefail

# shellcheck source=scripts/fuzz-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/fuzz-common.sh"

seconds="${FUZZ_SECONDS:-300}"
started=$(date +%s)
fuzz_setup fuzz
fuzz_build fuzz
built=$(date +%s)

failed=0
summary=()
for t in $fuzz_targets; do
  corpus="$fuzz_dir/corpus/$t"
  mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
  if [ -d "$fuzz_dir/seeds/$t" ]; then
    cp -n "$fuzz_dir/seeds/$t"/* "$corpus"/ 2>/dev/null || true
  fi
  log="$fuzz_logs/$t.open.log"
  echo "fuzz: $t for ${seconds}s"
  status=0
  # shellcheck disable=SC2086
  cargo fuzz run "${fuzz_flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$seconds" -print_final_stats=1 "${fuzz_input_limits[@]}" \
    ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  execs=$(fuzz_executions "$log")
  if fuzz_check_log fuzz "$t" "$log" "$status"; then
    summary+=("$t: ok, $execs executions in ${seconds}s")
  else
    failed=1
    summary+=("$t: FAILED after $execs executions (exit $status, log $log)$fuzz_failure_note")
  fi
done

finished=$(date +%s)
echo "fuzz: summary (build $((built - started))s, total $((finished - started))s):"
for line in "${summary[@]}"; do
  echo "  $line"
done
exit "$failed"
