#!/usr/bin/env bash
# Watchers at scale (issue 17): many concurrent watch streams on our kv-connect-server (sqlite)
# and on the reference denokv server, in one run, driven by `kv-bench --workload watch`.
# Writes benches/results/watch-<UTC stamp>.{md,json}.
#
#   benches/watch.sh                          # 10,000 watchers, every scenario (~2 minutes)
#   benches/watch.sh --watchers 2000 --duration 3
#   benches/watch.sh --scenarios hot-199-c1,hot-199-c4 --extra before=/path/to/old/kv-connect-server
#   DENOKV_BIN=/path/to/denokv benches/watch.sh   # NO_DENOKV=1 skips the reference
#
# denokv: as in compare.sh ($DENOKV_BIN, else benches/.denokv/bin/denokv, installed there on
# first use with `cargo install denokv --locked --version 0.14.0 --root benches/.denokv`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

(cd "$root" && cargo build --release -p kv-connect-server && cargo build --release -p kv-bench)

ref=()
if [ -z "${NO_DENOKV:-}" ]; then
    # shellcheck source=lib/denokv.sh
    . "$here/lib/denokv.sh"
    denokv="$(denokv_bin)"
    ref=(--denokv "$denokv")
fi

# 10,000 streams need as many file descriptors on the client side (connections are shared, but
# the servers' own limit matters too).
ulimit -n 65536 2>/dev/null || true

exec python3 "$here/watch.py" \
    --server "$root/target/release/kv-connect-server" \
    --bench "$root/target/release/kv-bench" \
    "${ref[@]}" \
    --out "$here/results" \
    "$@"
