#!/usr/bin/env bash
# Deep queues (issue 17): enqueue/delivery throughput, lateness, memory and restarts, driven by
# `kv-bench --workload queue` (see benches/queue.py for the scenarios). Writes
# benches/results/queue-<UTC stamp>.{md,json}.
#
#   benches/queue.sh                                   # 1M messages on sqlite and redb, 100k on memory
#   benches/queue.sh --messages 100000 --engines sqlite --sample 2000
#   DENOKV_BIN=/path/to/denokv benches/queue.sh        # NO_DENOKV=1 skips the reference
#
# The reference denokv (benches/lib/denokv.sh) takes enqueues over KV Connect but cannot deliver
# them remotely, so it is measured on the enqueue scenarios only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

(cd "$root" && cargo build --release -p kv-connect-server -p kv-bench)

ref=()
if [ -z "${NO_DENOKV:-}" ]; then
    # shellcheck source=lib/denokv.sh
    . "$here/lib/denokv.sh"
    denokv="$(denokv_bin)"
    ref=(--denokv "$denokv")
fi

exec python3 "$here/queue.py" \
    --server "$root/target/release/kv-connect-server" \
    --bench "$root/target/release/kv-bench" \
    "${ref[@]}" \
    --out "$here/results" \
    "$@"
