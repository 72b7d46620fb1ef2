# Pieces shared by the scripts that start the throwaway PostgreSQL servers of the tests
# (start-postgres-test-server.sh: the primary; start-postgres-replica-test-server.sh: a hot
# standby streaming from it). Sourced, not run. The sourcing script defines `die MESSAGE` and
# `repo_root` first.
#
# Defines:
#   pg_parse_args ARGS...
#                      the scripts' common arguments: sets `exit_with` (`--exit-with PID`) and
#                      `stop` (1 with `--stop`); an unknown argument dies
#   pg_base            /tmp/kv-test-postgres-<uid>-<checkout hash>: one folder per checkout, so
#                      worktrees do not share servers
#   find_bin NAME      path of a PostgreSQL program (the distribution's layout first)
#   pg_require_server_binaries
#                      installs the distribution package `postgresql` with apt-get (root only)
#                      when initdb/pg_ctl are missing
#   pg_owner_setup DIR creates the unprivileged system user `kvtest` when running as root
#                      (PostgreSQL refuses to run as root), gives it DIR, and defines
#                      `as_owner CMD...` (runs CMD as kvtest, or as is when not root)
#   pg_free_port       prints a free loopback TCP port
#   pg_watchdog LOCK USERS DATA PID
#                      registers PID as a user of the server in DATA: a background watchdog
#                      stops that server (`pg_ctl stop -m fast`, under the flock LOCK) once PID
#                      and every other process registered in the folder USERS are gone

pg_parse_args() {
  exit_with=""
  stop=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --exit-with) [ $# -ge 2 ] || die "--exit-with needs a value"; exit_with="$2"; shift 2 ;;
      --stop) stop=1; shift ;;
      *) die "unknown argument: $1" ;;
    esac
  done
}

checkout_hash="$(printf '%s' "$repo_root" | cksum | cut -d' ' -f1)"
pg_base="/tmp/kv-test-postgres-$(id -u)-$checkout_hash"

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

pg_require_server_binaries() {
  if ! find_bin initdb >/dev/null || ! find_bin pg_ctl >/dev/null || ! find_bin pg_basebackup >/dev/null; then
    [ "$(id -u)" = 0 ] || die "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are missing; install the 'postgresql' package"
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL binaries are missing and apt-get is not available"
    echo "postgres test server: installing the postgresql package with apt-get" >&2
    (apt-get install -y postgresql >&2 || { apt-get update >&2 && apt-get install -y postgresql >&2; }) \
      || die "apt-get install postgresql failed"
  fi
}

pg_owner_setup() {
  if [ "$(id -u)" = 0 ]; then
    if ! id kvtest >/dev/null 2>&1; then
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kvtest \
        || die "useradd kvtest failed"
    fi
    chown kvtest "$1"
    as_owner() { setpriv --reuid=kvtest --regid="$(id -g kvtest)" --init-groups -- "$@"; }
  else
    as_owner() { "$@"; }
  fi
}

pg_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pg_watchdog() {
  local lock="$1" users="$2" data="$3" pid="$4" pg_ctl
  pg_ctl="$(find_bin pg_ctl)" || die "pg_ctl not found"
  touch "$users/$pid"
  (
    while kill -0 "$pid" 2>/dev/null; do sleep 1; done
    exec 9>"$lock"
    flock 9
    rm -f "$users/$pid"
    for f in "$users"/*; do
      [ -e "$f" ] || continue
      if kill -0 "$(basename "$f")" 2>/dev/null; then exit 0; fi
      rm -f "$f"
    done
    as_owner "$pg_ctl" stop -D "$data" -m fast >/dev/null 2>&1 || true
  ) >/dev/null 2>&1 </dev/null 9>&- &
  disown $! 2>/dev/null || true
}
