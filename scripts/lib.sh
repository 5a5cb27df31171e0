# Helpers sourced by the scripts that start local servers (demo.sh, bench-pipeline.sh).
# Needs PY (a python3) and, for wait_http, curl.

# free_port: a free TCP port on loopback.
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL SECONDS: until the URL answers 200.
wait_http() {
  local end=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

# stop_pids PID...: TERM each, wait up to 10 s for each to exit, then KILL what is left.
stop_pids() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
