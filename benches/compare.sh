#!/usr/bin/env bash
# Side-by-side load comparison of our kv-connect-server (sqlite, redb, memory engines) and the
# reference denokv server (default and batched configurations) with kv-bench, in one run.
# Writes benches/results/compare-<UTC stamp>.{md,json} and a copy of the table in benches/results/latest.md.
#
#   benches/compare.sh                       # 3 rounds x 5 s per workload and server (~12 min)
#   benches/compare.sh --rounds 1 --duration 2 --workloads set-c64,get-c64
#   DENOKV_BIN=/path/to/denokv benches/compare.sh
#
# denokv: $DENOKV_BIN if set, else benches/.denokv/bin/denokv, installed there on first use with
# `cargo install denokv --locked --version 0.14.0 --root benches/.denokv`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

# Built one at a time: building them together would unify their features and rebuild both.
(cd "$root" && cargo build --release -p kv-connect-server && cargo build --release -p kv-bench)

# shellcheck source=lib/denokv.sh
. "$here/lib/denokv.sh"
denokv="$(denokv_bin)"

exec python3 "$here/compare.py" \
    --server "$root/target/release/kv-connect-server" \
    --bench "$root/target/release/kv-bench" \
    --denokv "$denokv" \
    --out "$here/results" \
    "$@"
