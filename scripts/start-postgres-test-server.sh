#!/usr/bin/env bash
# Starts (or reuses) a throwaway PostgreSQL 15 cluster for the kv-engine-postgres tests.
#
# The cluster lives in /tmp/kv-test-postgres-<uid>-<checkout hash>/ (one per checkout, so
# worktrees do not share it), listens on 127.0.0.1 only, on a free port chosen at first start,
# and runs as the unprivileged system user `kvtest` (created with useradd when this script runs
# as root; PostgreSQL refuses to run as root). Authentication over TCP: the superuser kvtest is
# trusted, the user kvtest_pw (password kvtest_pw) must give its scram-sha-256 password (for
# the tests of authentication failures); trust on the cluster's private Unix socket. Durability
# settings are PostgreSQL's defaults. If initdb/pg_ctl are missing, the distribution package
# `postgresql` is installed with apt-get (root only).
#
# Usage: start-postgres-test-server.sh [--exit-with PID] [--stop]
#   --exit-with PID  register PID as a user of the cluster; a watchdog stops the cluster once
#                    every registered process is gone (the test processes), so nothing is left
#                    running after the tests and a later run starts cleanly
#   --stop           stop the cluster now
#
# Idempotent: a running cluster is reused (concurrent callers are serialized with flock). On
# success it prints, one per line, and exits 0:
#   POSTGRES_URL=postgres://kvtest:kvtest@127.0.0.1:<port>/kvtest
#   POSTGRES_PASSWORD_URL=postgres://kvtest_pw:kvtest_pw@127.0.0.1:<port>/kvtest
#   POSTGRES_DATA=<data directory>
#   POSTGRES_LOG=<server log file>
# On failure it prints a clear message on stderr and exits 1.
set -euo pipefail

die() {
  echo "start-postgres-test-server: ERROR: $*" >&2
  exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/postgres-test-cluster.sh
. "$repo_root/scripts/lib/postgres-test-cluster.sh"
pg_parse_args "$@"
base="$pg_base"
data="$base/data"
log="$base/postgres.log"
users="$base/users"
mkdir -p "$base" "$users"
chmod 755 "$base"

pg_require_server_binaries
initdb="$(find_bin initdb)" || die "initdb not found after installation"
pg_ctl="$(find_bin pg_ctl)" || die "pg_ctl not found after installation"
pg_owner_setup "$base"

# Serialize callers. The lock's descriptor (9) must not leak into the server (pg_ctl start
# runs with it closed), or the server would hold the lock forever.
exec 9>"$base/lock"
flock 9

running() {
  [ -f "$base/port" ] && as_owner "$pg_ctl" status -D "$data" >/dev/null 2>&1
}

if [ "$stop" = 1 ]; then
  if running; then as_owner "$pg_ctl" stop -D "$data" -m fast >/dev/null 2>&1 || true; fi
  rm -f "$users"/*
  exit 0
fi

if ! running; then
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    pwfile="$base/pwfile"
    echo kvtest >"$pwfile"
    chmod 644 "$pwfile"
    as_owner "$initdb" -D "$data" -U kvtest --pwfile="$pwfile" --auth-host=scram-sha-256 \
      --auth-local=trust -E UTF8 --locale=C >"$base/initdb.log" 2>&1 \
      || die "initdb failed; its log ($base/initdb.log):
$(tail -n 30 "$base/initdb.log")"
    rm -f "$pwfile"
    # The tests' user is trusted on loopback (password hashing in debug builds of the client
    # would slow every new connection); kvtest_pw (created below) checks passwords.
    cat >"$data/pg_hba.conf" <<'HBA'
local all all                trust
host  all kvtest 127.0.0.1/32 trust
host  all all    127.0.0.1/32 scram-sha-256
HBA
  fi
  port="$(pg_free_port)" || die "could not pick a free port"
  rm -f "$data/postmaster.pid"
  as_owner "$pg_ctl" start -D "$data" -l "$log" -w -t 60 -o \
    "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$base -c max_connections=300 -c shared_buffers=32MB" \
    >/dev/null 2>&1 9>&- || die "pg_ctl start failed; the server log ($log):
$(tail -n 30 "$log" 2>/dev/null)"
  echo "$port" >"$base/port"
  psql="$(find_bin psql || command -v psql)" || die "psql not found"
  if ! as_owner "$psql" -h "$base" -p "$port" -U kvtest -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'kvtest'" | grep -q 1; then
    as_owner "$psql" -h "$base" -p "$port" -U kvtest -d postgres -qc "CREATE DATABASE kvtest" >/dev/null \
      || die "CREATE DATABASE kvtest failed"
  fi
  as_owner "$psql" -h "$base" -p "$port" -U kvtest -d postgres -qc \
    "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kvtest_pw') THEN
       CREATE ROLE kvtest_pw LOGIN PASSWORD 'kvtest_pw'; END IF; END \$\$" >/dev/null \
    || die "creating the role kvtest_pw failed"
fi
port="$(cat "$base/port")"

if [ -n "$exit_with" ]; then
  # Once every registered process is gone, stop the cluster.
  pg_watchdog "$base/lock" "$users" "$data" "$exit_with"
fi

echo "POSTGRES_URL=postgres://kvtest:kvtest@127.0.0.1:$port/kvtest"
echo "POSTGRES_PASSWORD_URL=postgres://kvtest_pw:kvtest_pw@127.0.0.1:$port/kvtest"
echo "POSTGRES_DATA=$data"
echo "POSTGRES_LOG=$log"
