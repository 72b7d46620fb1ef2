#!/usr/bin/env bash
# Scale benchmark: fills each server (ours: sqlite, redb, memory; the reference denokv) to each
# size and measures point reads/writes (1 and 64 clients), a 10k-key list, a count-like scan,
# open time after a clean stop and after SIGKILL, disk use vs logical size and server RSS.
# Writes benches/results/scale-<UTC stamp>.{md,json,png} and scale-latest.{md,png}.
#
#   benches/scale.sh                                   # 10k and 100k keys, 1000-byte values
#   benches/scale.sh --sizes 100000,1000000 --value-size 500
#   benches/scale.sh --sizes 100000 --disk-values 200,1000,2000,4000   # plus a disk-use pass
#   benches/scale.sh --servers ours-sqlite,ours-redb --duration 5
#   BEFORE_SERVER=/path/to/older/kv-connect-server benches/scale.sh --servers ours-sqlite-before,ours-sqlite
#   # the issue-17 run: 100k and 1M keys at 1000 B and 200 B, 10M keys at 200 B
#   BEFORE_SERVER=... benches/scale.sh --servers ours-sqlite-before,ours-sqlite,ours-redb,denokv,ours-memory \
#       --sizes 100000@1000,100000@200,1000000@1000,1000000@200,10000000@200 --data-dir /big/disk/dir
#
# Options are those of benches/scale.py (`python3 benches/scale.py --help`). Database files go to
# a temporary directory under $TMPDIR (or --data-dir): 1M keys of 1 KB need about 1.3 GB per
# file server (denokv 4.5 GB), 10M keys of 200 B about 4 GB (denokv 7.5 GB). Each server's files
# are deleted once it is measured; a server whose data would leave less than --min-free-gb (12)
# free is skipped, and so is ours-memory above --memory-max-keys (2M). denokv: as in compare.sh ($DENOKV_BIN, else benches/.denokv, installed on first
# use). The plot needs matplotlib, installed from PyPI into benches/.venv on first use (without
# it the tables are still written).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

(cd "$root" && cargo build --release -p kv-connect-server && cargo build --release -p kv-bench)

# shellcheck source=lib/denokv.sh
. "$here/lib/denokv.sh"
denokv="$(denokv_bin)"

python="$here/.venv/bin/python3"
if [ ! -x "$python" ] || ! "$python" -c "import matplotlib" 2>/dev/null; then
    echo "installing matplotlib into $here/.venv (once)" >&2
    python3 -m venv "$here/.venv" && "$here/.venv/bin/pip" install --quiet matplotlib \
        || { echo "no matplotlib: tables only" >&2; python=python3; }
fi

before=()
if [ -n "${BEFORE_SERVER:-}" ]; then
    before=(--before-server "$BEFORE_SERVER")
fi

cd "$root"
exec "$python" "$here/scale.py" \
    --server "$root/target/release/kv-connect-server" \
    --bench "$root/target/release/kv-bench" \
    --denokv "$denokv" \
    --out "$here/results" \
    --argv "$*" \
    "${before[@]}" \
    "$@"
