# Helpers sourced by the scripts that start local servers (demo.sh, bench-pipeline.sh,
# bench-lesion.sh).
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

# The benchmarks that run the real gateway against a real Orthanc (bench-pipeline.sh,
# bench-lesion.sh) share the helpers below. They need ROOT, BIN, WORK, PY and the script's own
# die (which names the script in its messages).

# require_bench_tools: bin/dpersona, storescu, dcmodify, curl and Orthanc (sets ORTHANC_BIN).
require_bench_tools() {
  [ -x "$BIN" ] || die "$BIN is missing: run 'make build'"
  local tool
  for tool in storescu dcmodify curl; do command -v $tool >/dev/null || die "$tool is not installed: run scripts/setup.sh"; done
  ORTHANC_BIN=$(command -v Orthanc || echo /usr/sbin/Orthanc)
  [ -x "$ORTHANC_BIN" ] || die "Orthanc is not installed: run scripts/setup.sh"
}

# bench_workspace: a fresh $WORK (Orthanc's storage, studies/), an empty PIDS, and traps that stop
# every process in PIDS and remove the bulky data (images, stores) on exit or interrupt.
bench_workspace() {
  rm -rf "$WORK"; mkdir -p "$WORK/orthanc/db" "$WORK/studies"
  chmod 0777 "$WORK/orthanc" "$WORK/orthanc/db"
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  stop_pids "${PIDS[@]}"
  rm -rf "$WORK/orthanc/db" "$WORK/data" "$WORK/studies" "$WORK/offline"
}

# start_bench_orthanc: Orthanc as the downstream PACS (AE ORTHANC, any caller may store) on two
# free loopback ports, ORTHANC_DICOM and ORTHANC_HTTP; as user nobody when run as root (Orthanc
# refuses to run as root); log in $WORK/orthanc.log. Returns once its REST API answers.
start_bench_orthanc() {
  ORTHANC_DICOM=$(free_port); ORTHANC_HTTP=$(free_port)
  cat > "$WORK/orthanc/orthanc.json" <<JSON
{"Name": "bench-pacs", "StorageDirectory": "$WORK/orthanc/db", "IndexDirectory": "$WORK/orthanc/db",
 "HttpPort": $ORTHANC_HTTP, "DicomPort": $ORTHANC_DICOM, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
 "AuthenticationEnabled": false, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowEcho": true,
 "DicomCheckCalledAet": false, "UnknownSopClassAccepted": true}
JSON
  local run_as=()
  [ "$(id -u)" = 0 ] && run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  "${run_as[@]}" "$ORTHANC_BIN" "$WORK/orthanc/orthanc.json" >"$WORK/orthanc.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$ORTHANC_HTTP/system" 30 || die "Orthanc did not start"
}

# wait_study_state STUDIES_URL STUDY_UID SECONDS: polls the gateway's study list until the study
# is done or failed, or SECONDS pass, and prints its last state; fails if the gateway does not
# answer. One poll a second: the timings come from the gateway's own timestamps, so a slow poll
# costs no accuracy, while a fast one (a python per poll) would steal CPU from the model.
wait_study_state() {
  local end=$((SECONDS + $3)) state=""
  while [ $SECONDS -lt $end ]; do
    state=$(curl -fsS "$1" | $PY -c 'import json,sys
for s in json.load(sys.stdin):
    if s["study_instance_uid"] == sys.argv[1]: print(s["state"])' "$2") || return 1
    case $state in done|failed) break ;; esac
    sleep 1
  done
  echo "$state"
}
