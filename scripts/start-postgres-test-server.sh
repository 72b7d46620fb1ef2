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

exit_with=""
stop=0
while [ $# -gt 0 ]; do
  case "$1" in
    --exit-with) [ $# -ge 2 ] || die "--exit-with needs a value"; exit_with="$2"; shift 2 ;;
    --stop) stop=1; shift ;;
    *) die "unknown argument: $1" ;;
  esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
checkout_hash="$(printf '%s' "$repo_root" | cksum | cut -d' ' -f1)"
base="/tmp/kv-test-postgres-$(id -u)-$checkout_hash"
data="$base/data"
log="$base/postgres.log"
users="$base/users"
mkdir -p "$base" "$users"
chmod 755 "$base"

find_bin() {
  local name="$1" dir
  for dir in /usr/lib/postgresql/15/bin /usr/local/bin /usr/bin; do
    [ -x "$dir/$name" ] && { echo "$dir/$name"; return 0; }
  done
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/$name" ] && { echo "$dir/$name"; return 0; }
  done
  return 1
}

if ! find_bin initdb >/dev/null || ! find_bin pg_ctl >/dev/null; then
  [ "$(id -u)" = 0 ] || die "PostgreSQL server binaries (initdb, pg_ctl) are missing; install the 'postgresql' package"
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL binaries are missing and apt-get is not available"
  echo "start-postgres-test-server: installing the postgresql package with apt-get" >&2
  (apt-get install -y postgresql >&2 || { apt-get update >&2 && apt-get install -y postgresql >&2; }) \
    || die "apt-get install postgresql failed"
fi
initdb="$(find_bin initdb)" || die "initdb not found after installation"
pg_ctl="$(find_bin pg_ctl)" || die "pg_ctl not found after installation"

# Run a command as the cluster's owner.
if [ "$(id -u)" = 0 ]; then
  if ! id kvtest >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kvtest \
      || die "useradd kvtest failed"
  fi
  chown kvtest "$base"
  as_owner() { setpriv --reuid=kvtest --regid="$(id -g kvtest)" --init-groups -- "$@"; }
else
  as_owner() { "$@"; }
fi

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
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')" \
    || die "could not pick a free port"
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
  touch "$users/$exit_with"
  # Watchdog: once every registered process is gone, stop the cluster.
  (
    while kill -0 "$exit_with" 2>/dev/null; do sleep 1; done
    exec 9>"$base/lock"
    flock 9
    rm -f "$users/$exit_with"
    for f in "$users"/*; do
      [ -e "$f" ] || continue
      if kill -0 "$(basename "$f")" 2>/dev/null; then exit 0; fi
      rm -f "$f"
    done
    as_owner "$pg_ctl" stop -D "$data" -m fast >/dev/null 2>&1 || true
  ) >/dev/null 2>&1 </dev/null 9>&- &
  disown $! 2>/dev/null || true
fi

echo "POSTGRES_URL=postgres://kvtest:kvtest@127.0.0.1:$port/kvtest"
echo "POSTGRES_PASSWORD_URL=postgres://kvtest_pw:kvtest_pw@127.0.0.1:$port/kvtest"
echo "POSTGRES_DATA=$data"
echo "POSTGRES_LOG=$log"
