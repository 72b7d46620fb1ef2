#!/usr/bin/env bash
# Scale-out numbers: kv-bench against 1, 2 and 3 kv-connect-servers sharing one PostgreSQL
# database (clients spread round-robin), against our SQLite server and against the reference
# denokv, in one run, release builds, loopback only.
#
#   benches/postgres.sh [--duration SECS] [--clients N] [--targets pg-1,pg-2,pg-3,ours-sqlite,denokv]
#                       [--workloads set,get,bank,list]
#   DENOKV_BIN=/path/to/denokv benches/postgres.sh
#
# Per target and workload: fresh data (a new schema / a new file), the servers started, the
# read keys seeded beforehand (get, list), then one kv-bench run of 1 s warm-up + --duration
# seconds (default 5) with --clients (default 64). Measured around that run:
#   - throughput and p99 from kv-bench's report;
#   - server CPU per operation: the servers' utime+stime (/proc/<pid>/stat) after minus before,
#     divided by the operations of the run (warm-up included, since the CPU sample covers it);
#   - PostgreSQL CPU per operation: the same over the postmaster and its children;
#   - PostgreSQL transactions per operation: pg_stat_database.xact_commit of the database,
#     after minus before (sampled 11 s after the run, once idle backends flushed their
#     statistics), divided by the
#     operations. For `set` an operation is one client write; for `bank` one acknowledged
#     transfer (its conflicts' writes and its reads included).
# Writes benches/results/postgres-<UTC stamp>.{md,json}. The load generator runs on the same
# machine as the servers and PostgreSQL, so every number includes its competition for CPU.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Built one at a time: building them together would unify their features and rebuild both.
(cd "$root" && cargo build --release -q -p kv-connect-server && cargo build --release -q -p kv-bench)

denokv="${DENOKV_BIN:-$here/.denokv/bin/denokv}"
[ -x "$denokv" ] || { echo "postgres.sh: denokv not found at $denokv (set DENOKV_BIN)" >&2; exit 1; }

eval "$("$root/scripts/start-postgres-test-server.sh" --exit-with $$)"
psql=""
for d in /usr/lib/postgresql/15/bin /usr/local/bin /usr/bin /usr/lib/postgresql/*/bin; do
  [ -x "$d/psql" ] && { psql="$d/psql"; break; }
done
[ -n "$psql" ] || { echo "postgres.sh: psql not found" >&2; exit 1; }

exec python3 - "$@" \
  --server "$root/target/release/kv-connect-server" \
  --bench "$root/target/release/kv-bench" \
  --denokv "$denokv" --psql "$psql" \
  --pg-url "$POSTGRES_URL" --pg-data "$POSTGRES_DATA" \
  --out "$here/results" <<'PY'
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time

TOKEN = "postgres-bench-token-0123456789"
TICK = os.sysconf("SC_CLK_TCK")

p = argparse.ArgumentParser()
p.add_argument("--duration", type=float, default=5.0)
p.add_argument("--clients", type=int, default=64)
p.add_argument("--targets", default="pg-1,pg-2,pg-3,ours-sqlite,denokv")
p.add_argument("--workloads", default="set,get,bank,list")
for a in ("--server", "--bench", "--denokv", "--psql", "--pg-url", "--pg-data", "--out"):
    p.add_argument(a, required=True)
args = p.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def pg_pids():
    try:
        with open(os.path.join(args.pg_data, "postmaster.pid")) as f:
            master = int(f.readline())
    except (OSError, ValueError):
        return []
    out = [master]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def pg_cpu():
    return {pid: cpu_secs(pid) for pid in pg_pids()}


def xact_commit():
    out = subprocess.run([args.psql, args.pg_url, "-tAc",
                          "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def wait_listening(port, proc, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def start(target, work, tag):
    """Starts the target's servers; returns (procs, urls)."""
    procs, urls = [], []
    if target.startswith("pg-"):
        n = int(target[3:])
        schema = f"bench_{tag}_{int(time.time() * 1000)}"
        cmds = [[args.server, "--engine", "postgres", "--database-url", args.pg_url,
                 "--database-schema", schema] for _ in range(n)]
    elif target == "ours-sqlite":
        cmds = [[args.server, "--engine", "sqlite", "--path", os.path.join(work, f"{tag}.sqlite")]]
    elif target == "denokv":
        cmds = [[args.denokv, "--sqlite-path", os.path.join(work, f"{tag}.sqlite"), "serve"]]
    else:
        sys.exit(f"unknown target {target}")
    for i, cmd in enumerate(cmds):
        port = free_port()
        log = open(os.path.join(work, f"{tag}-{i}.log"), "w")
        proc = subprocess.Popen(cmd + ["--access-token", TOKEN, "--addr", f"127.0.0.1:{port}"],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        procs.append(proc)
        if not wait_listening(port, proc):
            stop(procs)
            sys.exit(f"{target}: server did not start; see {log.name}")
        urls.append(f"http://127.0.0.1:{port}")
        # The first server creates the schema; let it finish before the next one starts.
        time.sleep(0.3 if i == 0 and len(cmds) > 1 else 0)
    return procs, urls


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def bench(urls, workload, extra, json_path=None):
    cmd = [args.bench, "--url", ",".join(urls), "--access-token", TOKEN, "--workload", workload,
           "--clients", str(args.clients), "--duration-secs", str(args.duration),
           "--warmup-secs", "1"] + extra
    if json_path:
        cmd += ["--json", json_path]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    return r


WORKLOAD_ARGS = {
    "set": [],
    "get": ["--keys", "10000", "--no-seed"],
    "list": ["--keys", "10000", "--list-keys", "100", "--no-seed"],
    "bank": ["--accounts", "100"],
}

rows = []
work = tempfile.mkdtemp(prefix="kv-pg-bench-")
started = time.time()
try:
    for target in args.targets.split(","):
        for wl in args.workloads.split(","):
            tag = f"{target.replace('-', '_')}_{wl}"
            procs, urls = start(target, work, tag)
            try:
                if wl in ("get", "list"):
                    r = subprocess.run([args.bench, "--url", urls[0], "--access-token", TOKEN,
                                        "--seed-only", "--keys", "10000"],
                                       capture_output=True, text=True, timeout=300)
                    if r.returncode != 0:
                        sys.exit(f"{target}: seeding failed: {r.stderr}")
                is_pg = target.startswith("pg-")
                if is_pg:
                    time.sleep(1.5)
                    x0, pg0 = xact_commit(), pg_cpu()
                c0 = sum(cpu_secs(p.pid) for p in procs)
                jpath = os.path.join(work, f"{tag}.json")
                r = bench(urls, wl, WORKLOAD_ARGS[wl], jpath)
                c1 = sum(cpu_secs(p.pid) for p in procs)
                if is_pg:
                    pg1 = pg_cpu()
                    # Idle backends flush their pending statistics after 10 s (PostgreSQL 15).
                    time.sleep(11)
                    x1 = xact_commit()
                if not os.path.exists(jpath):
                    sys.exit(f"{target} {wl}: kv-bench failed: {r.stdout}\n{r.stderr}")
                rep = json.load(open(jpath))
                ops_all = rep["ops"] + int(rep["params"].get("warmup_ops", 0))
                row = {
                    "target": target, "workload": wl, "servers": len(urls),
                    "ops_per_sec": rep["ops_per_sec"], "p99_ms": rep["latency"]["p99_ms"],
                    "errors": rep["errors"], "conflicts": rep["conflicts"],
                    "unknown": rep.get("unknown_outcomes", 0),
                    "checks_passed": r.returncode == 0,
                    "ops_incl_warmup": ops_all,
                    "server_cpu_us_per_op": (c1 - c0) * 1e6 / ops_all if ops_all else None,
                    "pg_cpu_us_per_op": None, "pg_xacts_per_op": None,
                }
                if is_pg and ops_all:
                    pg_delta = sum(max(0.0, pg1.get(pid, 0.0) - pg0.get(pid, 0.0)) for pid in pg1)
                    row["pg_cpu_us_per_op"] = pg_delta * 1e6 / ops_all
                    # Two psql sessions (the samples) commit a transaction each.
                    row["pg_xacts_per_op"] = max(0, x1 - x0 - 1) / ops_all
                rows.append(row)
                print(f"{target:12} {wl:5} {row['ops_per_sec']:9.0f} ops/s p99 {row['p99_ms']:8.2f} ms "
                      f"cpu/op {row['server_cpu_us_per_op'] or 0:7.0f} us "
                      f"pg xacts/op {row['pg_xacts_per_op'] if row['pg_xacts_per_op'] is not None else '-'}"
                      f"{'' if row['checks_passed'] else '  CHECKS FAILED'}", flush=True)
            finally:
                stop(procs)
finally:
    shutil.rmtree(work, ignore_errors=True)

stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
os.makedirs(args.out, exist_ok=True)
fmt = lambda v, f: "–" if v is None else f.format(v)
lines = [
    f"# Scale-out on PostgreSQL ({stamp} UTC)",
    "",
    f"kv-bench, {args.clients} clients (h2c, one connection each, spread round-robin over the "
    f"servers), 1 s warm-up + {args.duration:g} s per cell, release builds, everything on one "
    f"{os.cpu_count()}-core machine (load generator included). `pg-N` = N kv-connect-servers "
    "(`--engine postgres`, pool 16 each) on one PostgreSQL 15 (scripts/start-postgres-test-server.sh, "
    "default durability); `ours-sqlite` = one kv-connect-server, SQLite engine; `denokv` = "
    "`denokv serve` 0.14 (SQLite). set = one-key atomic write, get = one-key strong read, "
    "bank = checked two-account transfer with its record (conflicts retried), list = 100 keys "
    "in one page. CPU/op = CPU time (user+sys) over the run's operations, warm-up included; "
    "PG xacts/op = pg_stat_database.xact_commit delta per operation (read-only snapshots end "
    "in ROLLBACK, so reads count ~0 there).",
    "",
    "| target | workload | ops/s | p99 ms | server CPU µs/op | Postgres CPU µs/op | PG xacts/op | conflicts | errors | unknown |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for r in rows:
    lines.append(
        f"| {r['target']} | {r['workload']} | {r['ops_per_sec']:.0f} | {r['p99_ms']:.2f} | "
        f"{fmt(r['server_cpu_us_per_op'], '{:.0f}')} | {fmt(r['pg_cpu_us_per_op'], '{:.0f}')} | "
        f"{fmt(r['pg_xacts_per_op'], '{:.2f}')} | {r['conflicts']} | {r['errors']} | {r['unknown']}"
        f"{'' if r['checks_passed'] else ' (checks FAILED)'} |")
lines.append("")
lines.append(f"Total wall time {time.time() - started:.0f} s.")
md = "\n".join(lines) + "\n"
with open(os.path.join(args.out, f"postgres-{stamp}.md"), "w") as f:
    f.write(md)
with open(os.path.join(args.out, f"postgres-{stamp}.json"), "w") as f:
    json.dump(rows, f, indent=2)
print(md)
sys.exit(0 if all(r["checks_passed"] for r in rows) else 3)
PY
