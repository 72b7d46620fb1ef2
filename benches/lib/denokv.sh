# The reference server for the benchmark scripts (compare.sh, scale.sh, watch.sh). Sourced, not
# run; the sourcing script sets `here` (the benches/ folder) first.
#
# denokv_bin: prints the path of the denokv binary: $DENOKV_BIN if set (it must be executable),
# else benches/.denokv/bin/denokv, installed there on first use with
# `cargo install denokv --locked --version 0.14.0 --root benches/.denokv`. Fails with a message
# on stderr otherwise.
denokv_bin() {
    local bin="${DENOKV_BIN:-$here/.denokv/bin/denokv}"
    if [ ! -x "$bin" ]; then
        if [ -n "${DENOKV_BIN:-}" ]; then
            echo "DENOKV_BIN=$DENOKV_BIN is not an executable" >&2
            return 1
        fi
        echo "installing denokv 0.14.0 into $here/.denokv (once)" >&2
        cargo install denokv --locked --version 0.14.0 --root "$here/.denokv" >&2 || return 1
    fi
    echo "$bin"
}
