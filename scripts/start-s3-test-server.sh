#!/usr/bin/env bash
# Starts a local S3-compatible server for the kv-pitr tests (kv-pitr/tests/s3.rs):
# moto's standalone server (PyPI package `moto[server]`, pinned below), installed
# into a virtualenv in an ignored folder (default: <repo>/.kv-test-tools/moto-venv,
# override the tools folder with KV_TEST_TOOLS_DIR). Only PyPI is contacted, and
# only when the pinned version is not installed yet; later runs just start it.
#
# Usage: start-s3-test-server.sh [--port N] [--exit-with PID]
#   --port N        listen on 127.0.0.1:N (default: a free port chosen by the OS)
#   --exit-with PID stop the server once process PID is gone (the test process),
#                   so a killed test run leaves nothing behind
#
# The server listens on the loopback address only. On success it prints, one per line:
#   S3_ENDPOINT=http://127.0.0.1:<port>
#   S3_PID=<pid of the server process>
#   S3_LOG=<path of the server's log file>
# and exits 0, leaving the server running in the background (stop it with
# `kill <S3_PID>`). On failure it prints a clear message on stderr and exits 1.
set -euo pipefail

MOTO_VERSION=5.2.5

die() {
  echo "start-s3-test-server: ERROR: $*" >&2
  exit 1
}

port=""
exit_with=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) [ $# -ge 2 ] || die "--port needs a value"; port="$2"; shift 2 ;;
    --exit-with) [ $# -ge 2 ] || die "--exit-with needs a value"; exit_with="$2"; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${KV_TEST_TOOLS_DIR:-$repo_root/.kv-test-tools}"
venv="$tools/moto-venv"

python="$(command -v python3 || true)"
[ -n "$python" ] || die "python3 is not installed (needed to run moto's S3 server); install Python >= 3.9 with the venv module"
command -v curl >/dev/null 2>&1 || die "curl is not installed (needed to check that the server answers)"

# Is the pinned moto installed in the virtualenv at $1?
installed() {
  local dir="$1"
  [ -x "$dir/bin/moto_server" ] && [ -x "$dir/bin/python" ] || return 1
  [ "$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" = "$MOTO_VERSION" ] || return 1
  # The server extra (flask & co.) must be importable too.
  "$dir/bin/python" -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1 || return 1
  return 0
}

if ! installed "$venv"; then
  mkdir -p "$tools"
  # One installer at a time (parallel test runs); a virtualenv is not
  # relocatable, so it is built in place under the lock.
  exec 9>"$tools/.moto-venv.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if ! installed "$venv"; then
    echo "start-s3-test-server: installing moto[server]==$MOTO_VERSION from PyPI into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2 || { rm -rf "$venv"; die "python3 -m venv $venv failed (install the python3-venv package?)"; }
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      "moto[server]==$MOTO_VERSION" >&2; then
      rm -rf "$venv"
      die "pip install moto[server]==$MOTO_VERSION failed (is PyPI reachable?)"
    fi
    installed "$venv" || die "the installation in $venv is incomplete: moto_server or moto $MOTO_VERSION's server extra is missing"
  fi
  exec 9>&-
fi

if [ -z "$port" ]; then
  port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')" \
    || die "could not pick a free port"
fi

logdir="$tools/moto-logs"
mkdir -p "$logdir"
log="$logdir/moto-$port.log"
# setsid: the server gets its own session, so it outlives this script and is not
# hit by signals sent to the caller's process group.
setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
pid=$!

if [ -n "$exit_with" ]; then
  # Watchdog: stop the server when the given process exits.
  (
    while kill -0 "$exit_with" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
    kill "$pid" 2>/dev/null || true
  ) >/dev/null 2>&1 </dev/null &
  disown $! 2>/dev/null || true
fi

endpoint="http://127.0.0.1:$port"
for _ in $(seq 1 150); do
  if ! kill -0 "$pid" 2>/dev/null; then
    die "moto_server exited during startup; its log ($log):
$(tail -n 30 "$log" 2>/dev/null)"
  fi
  if curl -s -o /dev/null --max-time 2 "$endpoint/"; then
    disown "$pid" 2>/dev/null || true
    echo "S3_ENDPOINT=$endpoint"
    echo "S3_PID=$pid"
    echo "S3_LOG=$log"
    exit 0
  fi
  sleep 0.2
done
kill "$pid" 2>/dev/null || true
die "moto_server did not answer on $endpoint within 30 s; its log ($log):
$(tail -n 30 "$log" 2>/dev/null)"
