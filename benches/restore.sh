#!/usr/bin/env bash
# Backup and restore at scale (issue 17): per database size and store, the time to back the
# data up, the backup's storage bytes, the restore time and the restore's peak RSS, measured by
# the `restore_memory` example of kv-pitr (see its docs). Writes
# benches/results/restore-<UTC stamp>.{md,json}.
#
#   benches/restore.sh                                   # 1M keys of 1000 B, local + S3 (moto)
#   benches/restore.sh --sizes 1000000,10000000 --value-size 200 --stores local
#   benches/restore.sh --sizes 20000 --stores s3         # a quick check
#   benches/restore.sh --retention-run 240               # storage over time with/without
#                                                        # --backup-retention (see below)
#
# --retention-run SECONDS runs the `retention_growth` example instead (steady writes into two
# databases backed up side by side, one with a 60 s retention window, checkpoints every 10 s;
# extra flags after `--` go to the example) and writes
# benches/results/restore-retention-<stamp>.{md,json}: storage bytes over time and the restore
# times of the latest point and of the window's start at the end.
#
# Data goes under $RESTORE_SCRATCH (default /work/scratch/restore, else a temporary folder) and
# is deleted after each measurement. The run refuses to start a size whose estimated footprint
# (source database, backup and restored file, about 4x the raw data) would leave less than
# $MIN_FREE_GB (default 12) free on that disk.
#
# S3: moto's server, started by scripts/start-s3-test-server.sh (installed from PyPI on first
# use; KV_TEST_TOOLS_DIR reuses another checkout's tools). moto keeps objects smaller than
# MOTO_S3_DEFAULT_KEY_BUFFER_SIZE (about 5 MiB by default, so every log segment) in memory;
# this script sets it to 1 so that each object spills to a temporary file under the scratch
# folder instead, and records moto's own peak RSS.
set -euo pipefail
# The whole script is one block, read before it runs (editing the file mid-run is harmless).
{
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

sizes="1000000"
value_size=1000
stores="local,s3"
retention_run=""
example_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --retention-run) retention_run="$2"; shift 2 ;;
        --) shift; example_args=("$@"); break ;;
        --sizes) sizes="$2"; shift 2 ;;
        --value-size) value_size="$2"; shift 2 ;;
        --stores) stores="$2"; shift 2 ;;
        -h|--help) sed -n 2,20p "$0"; exit 0 ;;
        *) echo "restore.sh: unknown flag $1" >&2; exit 2 ;;
    esac
done

scratch="${RESTORE_SCRATCH:-/work/scratch/restore}"
mkdir -p "$scratch" 2>/dev/null || scratch="$(mktemp -d)"
min_free_gb="${MIN_FREE_GB:-12}"

if [ -n "$retention_run" ]; then
    (cd "$root" && CARGO_INCREMENTAL=0 cargo build --release -p kv-pitr --example retention_growth)
    stamp="$(date -u +%Y%m%d-%H%M%S)"
    run="$scratch/retention-$stamp"
    lines="$scratch/retention-$stamp.jsonl"
    load_before="$(cut -d' ' -f1 /proc/loadavg)"
    "$root/target/release/examples/retention_growth" --duration "$retention_run" --dir "$run" \
        "${example_args[@]}" | tee "$lines" >&2
    load_after="$(cut -d' ' -f1 /proc/loadavg)"
    rm -rf "$run"
    python3 - "$lines" "$here/results/restore-retention-$stamp" "$load_before" "$load_after" "${example_args[*]:-}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out, lb, la, extra = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
samples = [r for r in rows if "t_s" in r]
final = next(r for r in rows if "final" in r)
json.dump({"samples": samples, "final": final, "load": [float(lb), float(la)], "args": extra},
          open(out + ".json", "w"), indent=2)
mib = lambda b: f"{b / 1048576:.1f} MiB"
with open(out + ".md", "w") as f:
    f.write(f"# Backup storage over time, with and without retention ({out.rsplit('/', 1)[-1]})\n\n")
    f.write("`benches/restore.sh --retention-run SECONDS` (example `retention_growth`; extra flags: "
            f"`{extra or 'none'}`): two in-memory databases get the same steady writes (20 sets of "
            "1000 B per commit over 5,000 keys, 50 commits/s by default), each backed up to a local "
            "folder with checkpoints every 10 s; `plain` keeps the default 2 checkpoints and the whole "
            "log, `retention` runs with a 60 s window and no grace. "
            f"Load average {lb} before, {la} after (shared 2-core machine).\n\n")
    f.write("| t | commits | plain storage | plain segments | retention storage | retention segments | ratio |\n")
    f.write("|---:|---:|---:|---:|---:|---:|---:|\n")
    for r in samples:
        ratio = r["retention_bytes"] / r["plain_bytes"] if r["plain_bytes"] else 0
        f.write(f"| {r['t_s']} s | {r['commits']:,} | {mib(r['plain_bytes'])} | {r['plain_segments']} | "
                f"{mib(r['retention_bytes'])} | {r['retention_segments']} | {ratio:.2f} |\n")
    f.write("\nAt the end (after flush and shutdown), restores into a new in-memory database:\n\n")
    f.write("| backup | storage | segments | latest point: time (transactions replayed) | window start: time (transactions replayed) |\n")
    f.write("|---|---:|---:|---:|---:|\n")
    for name in ("plain", "retention"):
        r = final["final"][name]
        f.write(f"| {name} | {mib(r['bytes'])} | {r['segments']} | {r['latest_s']:.2f} s ({r['latest_transactions']:,}) | "
                f"{r['window_start_s']:.2f} s ({r['window_start_transactions']:,}) |\n")
print(out + ".md")
PY
    rm -f "$lines"
    exit 0
fi

(cd "$root" && CARGO_INCREMENTAL=0 cargo build --release -p kv-pitr --example restore_memory)
bin="$root/target/release/examples/restore_memory"

moto_pid=""
cleanup() {
    [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
    rm -rf "$scratch/run" "$scratch/moto-tmp"
}
trap cleanup EXIT

endpoint=""
if [[ ",$stores," == *",s3,"* ]]; then
    mkdir -p "$scratch/moto-tmp"
    out="$(MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=1 TMPDIR="$scratch/moto-tmp" \
        "$root/scripts/start-s3-test-server.sh" --exit-with $$)"
    endpoint="$(sed -n 's/^S3_ENDPOINT=//p' <<<"$out")"
    moto_pid="$(sed -n 's/^S3_PID=//p' <<<"$out")"
    export AWS_ACCESS_KEY_ID=test-access-key AWS_SECRET_ACCESS_KEY=test-secret-key AWS_REGION=us-east-1
fi

stamp="$(date -u +%Y%m%d-%H%M%S)"
lines="$scratch/lines-$stamp.jsonl"
# (Re)writes the results files from the measurements so far (after each one, so an
# interrupted run keeps what it measured).
report() {
python3 - "$lines" "$here/results/restore-$stamp" "$value_size" <<'PY'
import json, platform, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out, value_size = sys.argv[2], int(sys.argv[3])
mib = lambda b: b / 1048576
meta = {"value_size": value_size, "machine": platform.machine(),
        "cpus": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()}
json.dump({"meta": meta, "runs": rows}, open(out + ".json", "w"), indent=2)
with open(out + ".md", "w") as f:
    f.write(f"# Backup and restore at scale ({out.rsplit('/', 1)[-1]})\n\n")
    f.write(f"`benches/restore.sh`, values of {value_size} B, 200 sets per commit, SQLite source and target, "
            "release build, shared 2-core machine (load averages per run below).\n\n")
    f.write("| keys | store | backup time | backup storage | restore time | restore peak RSS | restored file | moto peak RSS | load (before/after) |\n")
    f.write("|---:|---|---:|---:|---:|---:|---:|---:|---|\n")
    for r in rows:
        moto = f"{r['moto_peak_rss_kib'] / 1024:.0f} MiB" if r.get("moto_peak_rss_kib") else "–"
        f.write(f"| {r['keys']:,} | {r['store']} | {r['backup_s']:.1f} s | {mib(r['backup_bytes']):.0f} MiB | "
                f"{r['restore_s']:.1f} s | {r['peak_rss_kib'] / 1024:.0f} MiB | {mib(r['restored_file_bytes']):.0f} MiB | "
                f"{moto} | {r['load_before']:.1f}/{r['load_after']:.1f} |\n")
print(out + ".md")
PY

}
: >"$lines"
n=0
for size in ${sizes//,/ }; do
    for store in ${stores//,/ }; do
        n=$((n + 1))
        need_gb=$(( size * (value_size + 64) * 4 / 1000000000 + 1 ))
        free_gb=$(( $(df -Pk "$scratch" | awk 'NR == 2 { print $4 }') / 1048576 ))
        if [ $((free_gb - need_gb)) -lt "$min_free_gb" ]; then
            echo "restore.sh: skipping $size keys on $store: needs ~$need_gb GB, $free_gb GB free, keeping $min_free_gb GB" >&2
            continue
        fi
        run="$scratch/run"
        rm -rf "$run"
        args=(--keys "$size" --value-size "$value_size" --dir "$run")
        if [ "$store" = s3 ]; then
            bucket="restore-bench-$stamp-$n"
            curl -sf -X PUT "$endpoint/$bucket" >/dev/null
            args+=(--to "s3://$bucket/b" --s3-endpoint "$endpoint")
        fi
        echo "restore.sh: $size keys of $value_size B, store $store ($(uptime | sed 's/.*load/load/'))" >&2
        load_before="$(cut -d' ' -f1 /proc/loadavg)"
        line="$("$bin" "${args[@]}")"
        moto_hwm=null
        if [ "$store" = s3 ]; then
            moto_hwm="$(awk '/^VmHWM/ { print $2 }' "/proc/$moto_pid/status" 2>/dev/null || echo null)"
        fi
        load_after="$(cut -d' ' -f1 /proc/loadavg)"
        python3 - "$line" "$store" "$load_before" "$load_after" "$moto_hwm" >>"$lines" <<'PY'
import json, sys
line = json.loads(sys.argv[1])
line.update(store=sys.argv[2], load_before=float(sys.argv[3]), load_after=float(sys.argv[4]),
            moto_peak_rss_kib=None if sys.argv[5] in ("", "null") else int(sys.argv[5]))
print(json.dumps(line))
PY
        tail -n 1 "$lines" >&2
        rm -rf "$run"
        report
    done
done

rm -f "$lines"
exit
}
