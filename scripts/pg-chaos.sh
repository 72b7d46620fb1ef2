#!/usr/bin/env bash
# Chaos run of several kv-connect-servers sharing one PostgreSQL database (loopback only).
#
# Starts the throwaway PostgreSQL of scripts/start-postgres-test-server.sh, then 3 servers
# (--engine postgres) on one fresh schema, runs the kv-bench bank workload with 64 clients
# spread over the 3 servers for --duration seconds (default 60), and meanwhile:
#   at 20% of the run: SIGKILL server 2, restart it 2 s later (same port)
#   at 45%:            restart PostgreSQL (pg_ctl restart -m fast, as the cluster's owner)
#   at 70%:            SIGKILL server 3, restart it 2 s later
# Afterwards kv-bench verifies the final state against its ledger (total balance unchanged,
# every acknowledged transfer's record present, no phantom or doubly applied transfer, unknown
# outcomes counted as applied / not applied) and its auditor's reads through the servers
# (versionstamps never go backwards). The counts are printed; the exit status is non-zero on
# any violation, or if the run could not take place.
#
#   scripts/pg-chaos.sh [--duration SECS] [--clients N]
#
# Bounded: kv-bench runs under `timeout` (duration + 120 s); servers are stopped on exit, and
# PostgreSQL is stopped by the start script's watchdog once this script is gone. Release
# binaries are built first (no-op when up to date). Logs: $CHAOS_DIR (printed).
set -euo pipefail

duration=60
clients=64
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    *) echo "pg-chaos: unknown argument: $1" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
(cd "$root" && cargo build --release -q -p kv-connect-server && cargo build --release -q -p kv-bench)
server_bin="$root/target/release/kv-connect-server"
bench_bin="$root/target/release/kv-bench"

dir="${CHAOS_DIR:-$(mktemp -d /tmp/pg-chaos.XXXXXX)}"
mkdir -p "$dir"
echo "pg-chaos: logs in $dir"

eval "$("$root/scripts/start-postgres-test-server.sh" --exit-with $$)"
: "${POSTGRES_URL:?}" "${POSTGRES_DATA:?}" "${POSTGRES_LOG:?}"
schema="chaos_$(date +%s)_$$"
token="pg-chaos-token-$(date +%s%N)"

pg_ctl=""
for d in /usr/lib/postgresql/15/bin /usr/local/bin /usr/bin /usr/lib/postgresql/*/bin; do
  [ -x "$d/pg_ctl" ] && { pg_ctl="$d/pg_ctl"; break; }
done
[ -n "$pg_ctl" ] || { echo "pg-chaos: pg_ctl not found" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then
  as_owner() { setpriv --reuid=kvtest --regid="$(id -g kvtest)" --init-groups -- "$@"; }
else
  as_owner() { "$@"; }
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

declare -a ports pids
launch() { # index: start server i on its port, wait for its (new) "listening on" line
  local i="$1" before
  before="$(grep -c "listening on" "$dir/server$i.log" 2>/dev/null || true)"
  "$server_bin" --engine postgres --database-url "$POSTGRES_URL" --database-schema "$schema" \
    --access-token "$token" --addr "127.0.0.1:${ports[$i]}" >>"$dir/server$i.log" 2>&1 &
  pids[$i]=$!
  local deadline=$((SECONDS + 30))
  until [ "$(grep -c "listening on" "$dir/server$i.log" 2>/dev/null || true)" -gt "${before:-0}" ]; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "pg-chaos: server $i did not start; its log:" >&2
      tail -n 20 "$dir/server$i.log" >&2
      return 1
    fi
    sleep 0.1
  done
}

bench_pid=""
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

for i in 1 2 3; do
  ports[$i]="$(free_port)"
  launch "$i"
done
urls="http://127.0.0.1:${ports[1]},http://127.0.0.1:${ports[2]},http://127.0.0.1:${ports[3]}"
echo "pg-chaos: schema $schema, servers $urls"

restart_server() { # index
  local i="$1"
  echo "pg-chaos: $(date +%T) SIGKILL server $i (pid ${pids[$i]})"
  kill -KILL "${pids[$i]}"
  wait "${pids[$i]}" 2>/dev/null || true
  sleep 2
  launch "$i"
  echo "pg-chaos: $(date +%T) server $i restarted (pid ${pids[$i]})"
}

timeout "$((duration + 120))" "$bench_bin" --url "$urls" --access-token "$token" \
  --workload bank --clients "$clients" --duration-secs "$duration" --warmup-secs 1 \
  --accounts 100 --audit-interval-ms 50 --retry-secs 60 --label pg-chaos \
  --json "$dir/bank.json" >"$dir/bench.log" 2>&1 &
bench_pid=$!

at() { # fraction of the run -> seconds since the bench started (after ~1 s of warm-up)
  python3 -c "print(int(1 + $duration * $1))"
}
t0=$SECONDS
sleep_until() { local s=$(($1 - (SECONDS - t0))); [ $s -gt 0 ] && sleep "$s" || true; }

sleep_until "$(at 0.2)"
restart_server 2
sleep_until "$(at 0.45)"
echo "pg-chaos: $(date +%T) restarting PostgreSQL"
as_owner "$pg_ctl" restart -D "$POSTGRES_DATA" -m fast -w -t 60 -l "$POSTGRES_LOG" >/dev/null
echo "pg-chaos: $(date +%T) PostgreSQL restarted"
sleep_until "$(at 0.7)"
restart_server 3

status=0
wait "$bench_pid" || status=$?
bench_pid=""
cat "$dir/bench.log"
if [ ! -s "$dir/bank.json" ]; then
  echo "pg-chaos: FAIL: kv-bench produced no report (exit $status)" >&2
  exit 1
fi
python3 - "$dir/bank.json" "$status" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
status = int(sys.argv[2])
c = r["checks"]
v = c.get("bank_ledger") or {}
rows = [
    ("transfers acknowledged (warm-up + measured)", v.get("acknowledged")),
    ("transfers acknowledged in the measurement", f'{r["ops"]} ({r["ops_per_sec"]:.0f}/s)'),
    ("conflicts (check failures, retried)", r["conflicts"]),
    ("unknown outcomes", v.get("unknown")),
    ("  of which applied", v.get("unknown_applied")),
    ("  of which not applied", v.get("unknown_not_applied")),
    ("transfers applied (records found)", v.get("applied")),
    ("failed operations (not sent / gave up)", r["errors"]),
    ("balance check", "ok" if v.get("balance_ok") else "FAILED"),
    ("per-account check", "ok" if v.get("accounts_ok") else "FAILED"),
    ("audits (total balance)", c["bank_audits"]),
    ("audit violations", c["bank_violations"]),
    ("auditor reads / advanced", f'{c["auditor_reads"]} / {c["auditor_advanced"]}'),
    ("auditor violations (time went backwards)", c["auditor_violations"]),
]
for k, val in rows:
    print(f"{k:45} {val}")
bad = (status != 0 or not v or v.get("violations") or c["bank_violations"]
       or c["auditor_violations"] or not v.get("balance_ok") or not v.get("accounts_ok"))
for d in c.get("details", []):
    print("VIOLATION:", d)
print("pg-chaos:", "FAIL" if bad else "PASS", f"(kv-bench exit {status})")
sys.exit(1 if bad else 0)
PY
