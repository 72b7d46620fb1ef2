#!/usr/bin/env bash
# The fuzz part of the test command (scripts/test.sh): reproducible, the same inputs every run.
# For open-ended fuzzing that keeps finding new inputs, use scripts/fuzz.sh.
#
# For every cargo-fuzz target in fuzz/, after building them all once:
#   1. replay: every checked-in seed (fuzz/seeds/<target>/*) is run once;
#   2. fixed run: libFuzzer mutates from those seeds with a fixed random seed (-seed) for a fixed
#      number of executions (-runs, per target below), starting from an empty scratch corpus
#      (fuzz/target/smoke-corpus/<target>/, wiped first) plus the seeds, never from the growing
#      fuzz/corpus/. Address-space randomisation is switched off for the run (`setarch -R`,
#      when the system allows it: libFuzzer feeds compared values, which include addresses, back
#      into its mutations) and so is corpus reloading (-reload=0). Same binary + same seed + same
#      count = the same inputs for key_codec, v8_parse and wire_requests (checked: identical
#      coverage and corpus after repeated runs). db_ops, http_handlers and engine_ops still
#      drift after a while (their own randomness: hash seeds, threads, the clock steer the
#      coverage feedback), so for them only the seeds and the start are fixed.
# Exits non-zero if any input panics, trips an assertion, times out (60 s) or exceeds 4 GiB; the
# failing input is in fuzz/artifacts/<target>/ and the replay command is printed.
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when `cargo fuzz` is missing.
#
# Environment (see also scripts/fuzz-common.sh: FUZZ_TARGETS, FUZZ_SANITIZER, FUZZ_ARGS,
# FUZZ_LOG_DIR):
#   FUZZ_SEED   libFuzzer's -seed (default 1)
#   FUZZ_RUNS   executions of every target's fixed run, overriding the table below
#   FUZZ_SECONDS  set: this is the open-ended mode; the script hands over to scripts/fuzz.sh
set -euo pipefail

if [ -n "${FUZZ_SECONDS:-}" ]; then
  echo "fuzz-smoke: FUZZ_SECONDS is set: open-ended fuzzing is scripts/fuzz.sh; running that"
  exec "$(dirname "${BASH_SOURCE[0]}")/fuzz.sh" "$@"
fi

# shellcheck source=scripts/fuzz-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/fuzz-common.sh"

# Executions of each target's fixed run. Chosen so that each takes roughly 10-25 s on the
# project's (shared, 2-core) machine; together about the old 30 s per target or less.
fixed_runs() {
  case "$1" in
    key_codec) echo 1000000 ;;
    v8_parse) echo 2000000 ;;
    v8_decode) echo 2000000 ;;
    wire_requests) echo 1000000 ;;
    http_handlers) echo 100000 ;;
    db_ops) echo 40000 ;;
    engine_ops) echo 3000 ;;
    *) echo 10000 ;;
  esac
}

seed="${FUZZ_SEED:-1}"
started=$(date +%s)
# Run with address-space randomisation off when the system permits it.
no_aslr=()
if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R true >/dev/null 2>&1; then
  no_aslr=(setarch "$(uname -m)" -R)
else
  echo "fuzz-smoke: setarch -R is not available: address-space randomisation stays on, so the fixed runs are less reproducible" >&2
fi
fuzz_setup fuzz-smoke
fuzz_build fuzz-smoke
built=$(date +%s)

failed=0
summary=()
for t in $fuzz_targets; do
  t_started=$(date +%s)

  # 1. Replay the checked-in seeds, one by one.
  seeds=()
  if [ -d "$fuzz_dir/seeds/$t" ]; then
    while IFS= read -r f; do seeds+=("$f"); done < <(find "$fuzz_dir/seeds/$t" -type f | sort)
  fi
  replay_log="$fuzz_logs/$t.replay.log"
  if [ "${#seeds[@]}" -gt 0 ]; then
    echo "fuzz-smoke: $t: replaying ${#seeds[@]} seeds"
    status=0
    # shellcheck disable=SC2086
    cargo fuzz run "${fuzz_flags[@]}" "$t" "${seeds[@]}" -- "${fuzz_input_limits[@]}" \
      ${FUZZ_ARGS:-} >"$replay_log" 2>&1 || status=$?
    if ! fuzz_check_log fuzz-smoke "$t" "$replay_log" "$status"; then
      failed=1
      summary+=("$t: FAILED replaying its seeds (exit $status, log $replay_log)$fuzz_failure_note")
      continue
    fi
  else
    echo "fuzz-smoke: $t: no seeds in fuzz/seeds/$t" >&2
  fi

  # 2. Fixed seed, fixed number of executions, fresh scratch corpus.
  runs="${FUZZ_RUNS:-$(fixed_runs "$t")}"
  scratch="$fuzz_dir/target/smoke-corpus/$t"
  rm -rf "$scratch"
  mkdir -p "$scratch" "$fuzz_dir/artifacts/$t"
  corpora=("$scratch")
  if [ -d "$fuzz_dir/seeds/$t" ]; then corpora+=("$fuzz_dir/seeds/$t"); fi
  log="$fuzz_logs/$t.log"
  echo "fuzz-smoke: $t: $runs executions, -seed=$seed"
  status=0
  # shellcheck disable=SC2086
  ${no_aslr[@]+"${no_aslr[@]}"} cargo fuzz run "${fuzz_flags[@]}" "$t" "${corpora[@]}" -- \
    -seed="$seed" -runs="$runs" -reload=0 -print_final_stats=1 "${fuzz_input_limits[@]}" \
    ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  execs=$(fuzz_executions "$log")
  t_took=$(($(date +%s) - t_started))
  if fuzz_check_log fuzz-smoke "$t" "$log" "$status"; then
    summary+=("$t: ok, ${#seeds[@]} seeds replayed, $execs executions (-seed=$seed) in ${t_took}s")
  else
    failed=1
    summary+=("$t: FAILED after $execs executions (-seed=$seed -runs=$runs, exit $status, log $log)$fuzz_failure_note
      rerun this fixed run: FUZZ_TARGETS=$t FUZZ_SEED=$seed FUZZ_RUNS=$runs scripts/fuzz-smoke.sh")
  fi
done

finished=$(date +%s)
echo "fuzz-smoke: summary (build $((built - started))s, total $((finished - started))s):"
for line in "${summary[@]}"; do
  echo "  $line"
done
exit "$failed"
