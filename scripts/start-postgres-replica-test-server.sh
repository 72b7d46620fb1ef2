#!/usr/bin/env bash
# Starts (or reuses) a hot standby of the throwaway PostgreSQL test cluster, for the tests of
# eventual reads from a read replica (`kv-connect-server --database-replica-url`).
#
# First runs start-postgres-test-server.sh (the primary, started or reused; `--exit-with` is
# passed on). The standby is a physical streaming replica made with `pg_basebackup -R` from
# the primary into /tmp/kv-test-postgres-<uid>-<checkout hash>/replica/, listening on another
# free port on 127.0.0.1 only, run as the same unprivileged user `kvtest` (superuser of both,
# so tests may call pg_wal_replay_pause()/pg_wal_replay_resume() on the standby). The
# primary's pg_hba.conf gets `replication` lines for kvtest (trusted on loopback and the
# private socket) if it lacks them. A standby made from a primary that has since been
# restarted on another port is made again.
#
# Usage: start-postgres-replica-test-server.sh [--exit-with PID] [--stop]
#   --exit-with PID  register PID as a user of both servers; each server's watchdog stops it
#                    once every process registered with it is gone
#   --stop           stop the standby now (the primary keeps running)
#
# Idempotent; concurrent callers are serialized with flock. On success it prints, one per
# line, and exits 0:
#   POSTGRES_URL=<the primary's URL, as start-postgres-test-server.sh prints it>
#   POSTGRES_REPLICA_URL=postgres://kvtest:kvtest@127.0.0.1:<port>/kvtest
#   POSTGRES_REPLICA_DATA=<standby data directory>
#   POSTGRES_REPLICA_LOG=<standby log file>
# On failure it prints a clear message on stderr and exits 1.
set -euo pipefail

die() {
  echo "start-postgres-replica-test-server: ERROR: $*" >&2
  exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/postgres-test-cluster.sh
. "$repo_root/scripts/lib/postgres-test-cluster.sh"
pg_parse_args "$@"
base="$pg_base"
replica="$base/replica"
log="$base/replica.log"
users="$base/replica-users"

pg_require_server_binaries
pg_ctl="$(find_bin pg_ctl)" || die "pg_ctl not found"
pg_basebackup="$(find_bin pg_basebackup)" || die "pg_basebackup not found"
psql="$(find_bin psql || command -v psql)" || die "psql not found"

if [ "$stop" = 1 ]; then
  mkdir -p "$base"
  pg_owner_setup "$base"
  exec 9>"$base/replica.lock"
  flock 9
  if [ -f "$replica/PG_VERSION" ]; then
    as_owner "$pg_ctl" stop -D "$replica" -m fast >/dev/null 2>&1 || true
  fi
  rm -f "$users"/*
  exit 0
fi

primary_out="$(bash "$repo_root/scripts/start-postgres-test-server.sh" ${exit_with:+--exit-with "$exit_with"})" \
  || die "the primary did not start (start-postgres-test-server.sh failed)"
primary_url="$(printf '%s\n' "$primary_out" | sed -n 's/^POSTGRES_URL=//p')"
primary_data="$(printf '%s\n' "$primary_out" | sed -n 's/^POSTGRES_DATA=//p')"
primary_port="$(cat "$base/port")"
[ -n "$primary_url" ] && [ -n "$primary_data" ] || die "start-postgres-test-server.sh printed no POSTGRES_URL/POSTGRES_DATA"

mkdir -p "$users"
pg_owner_setup "$base"
# Serialize callers (descriptor 9 must not leak into the server, see the primary's script).
exec 9>"$base/replica.lock"
flock 9

# The primary must accept replication connections from kvtest.
if ! grep -q '^host *replication *kvtest' "$primary_data/pg_hba.conf"; then
  printf '%s\n' "local replication kvtest                trust" \
    "host  replication kvtest 127.0.0.1/32   trust" >>"$primary_data/pg_hba.conf"
  as_owner "$pg_ctl" reload -D "$primary_data" >/dev/null 2>&1 || die "reloading the primary's pg_hba.conf failed"
fi

running() {
  [ -f "$base/replica.port" ] && as_owner "$pg_ctl" status -D "$replica" >/dev/null 2>&1
}

if running && [ "$(cat "$base/replica.of" 2>/dev/null)" != "$primary_port" ]; then
  # Made from a primary that listened elsewhere: it can no longer stream. Make it again.
  as_owner "$pg_ctl" stop -D "$replica" -m fast >/dev/null 2>&1 || true
fi

if ! running; then
  if [ "$(cat "$base/replica.of" 2>/dev/null)" != "$primary_port" ] || [ ! -f "$replica/standby.signal" ]; then
    rm -rf "$replica"
    attempt=0
    # The pg_hba.conf reload above takes effect asynchronously: retry a few times.
    until as_owner "$pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U kvtest -D "$replica" \
      -R -X stream -c fast >"$base/basebackup.log" 2>&1; do
      attempt=$((attempt + 1))
      [ "$attempt" -lt 5 ] || die "pg_basebackup failed; its output ($base/basebackup.log):
$(tail -n 30 "$base/basebackup.log")"
      rm -rf "$replica"
      sleep 1
    done
    echo "$primary_port" >"$base/replica.of"
  fi
  port="$(pg_free_port)" || die "could not pick a free port"
  rm -f "$replica/postmaster.pid"
  as_owner "$pg_ctl" start -D "$replica" -l "$log" -w -t 60 -o \
    "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$base -c max_connections=300 -c shared_buffers=32MB -c hot_standby=on" \
    >/dev/null 2>&1 9>&- || die "pg_ctl start (standby) failed; its log ($log):
$(tail -n 30 "$log" 2>/dev/null)"
  echo "$port" >"$base/replica.port"
fi
port="$(cat "$base/replica.port")"

# A hot standby that accepts connections is in recovery; anything else is not a replica.
in_recovery="$(as_owner "$psql" -h "$base" -p "$port" -U kvtest -d kvtest -tAc 'SELECT pg_is_in_recovery()' 2>&1)" \
  || die "cannot query the standby: $in_recovery"
[ "$in_recovery" = t ] || die "the server on port $port is not a standby (pg_is_in_recovery() = $in_recovery)"

if [ -n "$exit_with" ]; then
  # Once every registered process is gone, stop the standby.
  pg_watchdog "$base/replica.lock" "$users" "$replica" "$exit_with"
fi

echo "POSTGRES_URL=$primary_url"
echo "POSTGRES_REPLICA_URL=postgres://kvtest:kvtest@127.0.0.1:$port/kvtest"
echo "POSTGRES_REPLICA_DATA=$replica"
echo "POSTGRES_REPLICA_LOG=$log"
