# Shared by scripts/fuzz-smoke.sh and scripts/fuzz.sh (sourced, not run).
#
# Contract:
#   - `fuzz_setup` installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when `cargo fuzz`
#     is missing, exports RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags; a stable
#     toolchain is enough with it), cds into fuzz/ and sets `fuzz_targets` (FUZZ_TARGETS, or
#     every target from `cargo fuzz list`), `fuzz_flags` (the same for build and run, so a run
#     never rebuilds) and `fuzz_logs` (FUZZ_LOG_DIR, default fuzz/target/fuzz-logs).
#   - `fuzz_build` builds every target once.
#   - `fuzz_check_log NAME LOG STATUS` decides whether one libFuzzer run failed: a non-zero exit
#     or an artifact written ("Test unit written to …"). On failure it prints the last lines of
#     the log, the artifact and the command that replays it, sets `fuzz_failure_note` (the
#     artifact and command, for a summary) and returns 1.
#
# Environment:
#   FUZZ_TARGETS    space-separated targets (default: every target)
#   FUZZ_SANITIZER  address | none (default none: the code is safe Rust, and an ASAN build
#                   takes much longer; panics and the targets' assertions are the oracles)
#   FUZZ_ARGS       extra libFuzzer arguments, e.g. "-dict=…"
#   FUZZ_LOG_DIR    where each run's log goes

fuzz_repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$fuzz_repo_root/fuzz"

# Limits of one input, the same in every mode: a hang or a memory blow-up is a finding.
fuzz_input_limits=(-timeout=60 -rss_limit_mb=4096)

fuzz_setup() {
  local who="$1"
  export RUSTC_BOOTSTRAP=1
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "$who: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
  fi
  cd "$fuzz_dir"
  fuzz_sanitizer="${FUZZ_SANITIZER:-none}"
  fuzz_flags=(--sanitizer "$fuzz_sanitizer" --debug-assertions)
  fuzz_targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
  fuzz_logs="${FUZZ_LOG_DIR:-$fuzz_dir/target/fuzz-logs}"
  mkdir -p "$fuzz_logs"
}

fuzz_build() {
  local who="$1"
  echo "$who: building every target (sanitizer: $fuzz_sanitizer)"
  cargo fuzz build "${fuzz_flags[@]}"
}

# The command (from the repository root) that replays one input.
fuzz_repro_command() {
  local target="$1" input="$2"
  echo "(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${fuzz_flags[*]} $target ${input#"$fuzz_dir"/})"
}

fuzz_check_log() {
  local who="$1" target="$2" log="$3" status="$4" artifact
  fuzz_failure_note=""
  artifact=$(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //' | tail -1 || true)
  if [ "$status" -eq 0 ] && [ -z "$artifact" ]; then
    return 0
  fi
  echo "$who: $target FAILED (exit $status); last lines of $log:" >&2
  tail -n 40 "$log" >&2
  echo "$who: log: $log" >&2
  if [ -n "$artifact" ]; then
    case "$artifact" in /*) ;; *) artifact="$fuzz_dir/$artifact" ;; esac
    echo "$who: artifact: $artifact" >&2
    echo "$who: reproduce: $(fuzz_repro_command "$target" "$artifact")" >&2
    fuzz_failure_note="
      artifact: $artifact
      reproduce: $(fuzz_repro_command "$target" "$artifact")"
  fi
  return 1
}

# Executions reported by a run with -print_final_stats=1 ("?" when it did not get that far).
fuzz_executions() {
  local n
  n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$1" | grep -o '[0-9]*$' | tail -1 || true)
  echo "${n:-?}"
}
