#!/usr/bin/env bash
# Ingest benchmark: instances/s and MB/s that a receiver accepts from dcmtk storescu, with 1 and
# with 8 parallel associations, for this gateway (`dpersona serve`, fsync of every instance and
# its directory before the success status) against dcmtk storescp on the same machine in the same
# run, printed as a ratio. Not a test: it prints a table.
#
# The data: the 12 real 0.5 MB LIDC CT slices of testdata/ copied COPIES times with fresh SOP
# instance UIDs (dcmodify -gin), so the receivers store distinct instances.
#
# Environment: COPIES (default 25 -> 300 instances), RUNS (default 5 interleaved pairs; best times
# and the median pairwise ratio are reported),
# BENCH_DIR (scratch space, default a new directory under /tmp), DPERSONA (binary, default
# bin/dpersona or a fresh build), STORESCP_ARGS (default "--fork": one process per association,
# storescp's parallel mode; without it storescp serves associations one after another).
set -euo pipefail
cd "$(dirname "$0")/.."

COPIES=${COPIES:-25}
RUNS=${RUNS:-5}
STORESCP_ARGS=${STORESCP_ARGS:---fork}
for tool in storescu storescp dcmodify; do
  command -v "$tool" >/dev/null || { echo "bench-gateway: $tool (dcmtk) is required: run scripts/setup.sh" >&2; exit 1; }
done

WORK=${BENCH_DIR:-$(mktemp -d /tmp/dpersona-bench.XXXXXX)}
mkdir -p "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "${BENCH_DIR:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

DPERSONA=${DPERSONA:-}
if [ -z "$DPERSONA" ]; then
  if [ -x bin/dpersona ]; then DPERSONA=bin/dpersona; else
    go build -o "$WORK/dpersona" ./cmd/dpersona
    DPERSONA=$WORK/dpersona
  fi
fi

# Both dcmtk tools disable Nagle's algorithm only when told to.
export TCP_NODELAY=1

# --- data ---------------------------------------------------------------------------------------
DATA=$WORK/data
if [ ! -d "$DATA" ]; then
  echo "bench-gateway: preparing $((COPIES * 12)) instances with fresh SOP instance UIDs..."
  mkdir -p "$DATA.tmp"
  for i in $(seq 1 "$COPIES"); do
    for f in testdata/dicom/lidc-ct-0005/*.dcm testdata/dicom/lidc-ct-0004/*.dcm; do
      cp "$f" "$DATA.tmp/c${i}_$(basename "$(dirname "$f")")_$(basename "$f")"
    done
  done
  dcmodify -q -nb -gin "$DATA.tmp"/*.dcm
  mv "$DATA.tmp" "$DATA"
fi
FILES=("$DATA"/*.dcm)
N=${#FILES[@]}
BYTES=$(cat "${FILES[@]}" | wc -c)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench-gateway: nothing listens on port $1" >&2; return 1
}

# send ASSOCS AET PORT: splits the files round-robin over ASSOCS parallel storescu processes and
# prints the elapsed seconds; fails when any storescu fails.
send() {
  local assocs=$1 aet=$2 port=$3
  local lists=() i
  for ((i = 0; i < assocs; i++)); do lists[i]=""; done
  for ((i = 0; i < N; i++)); do lists[i % assocs]+="${FILES[i]} "; done
  local start end pids=() rc=0
  start=$(date +%s.%N)
  for ((i = 0; i < assocs; i++)); do
    # shellcheck disable=SC2086
    storescu -aet BENCH -aec "$aet" 127.0.0.1 "$port" ${lists[i]} >"$WORK/storescu.$i.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  end=$(date +%s.%N)
  if [ $rc -ne 0 ]; then
    echo "bench-gateway: storescu failed:" >&2; cat "$WORK"/storescu.*.log >&2; return 1
  fi
  python3 -c "print(f'{$end - $start:.3f}')"
}

count_files() { find "$1" -type f -name "$2" | wc -l; }

# run_storescp ASSOCS -> seconds
run_storescp() {
  local assocs=$1 out port pid secs
  out=$WORK/storescp.out; rm -rf "$out"; mkdir -p "$out"
  port=$(free_port)
  # shellcheck disable=SC2086
  storescp $STORESCP_ARGS -aet PACS -od "$out" "$port" >"$WORK/storescp.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_port "$port"
  secs=$(send "$assocs" PACS "$port")
  sleep 0.2
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  local got; got=$(count_files "$out" '*')
  [ "$got" -eq "$N" ] || { echo "bench-gateway: storescp stored $got of $N" >&2; return 1; }
  echo "$secs"
}

# run_dpersona ASSOCS -> seconds
run_dpersona() {
  local assocs=$1 dd port pid secs
  dd=$WORK/dpersona.data; rm -rf "$dd"
  port=$(free_port)
  "$DPERSONA" serve --data-dir "$dd" --dicom-listen "127.0.0.1:$port" --http-listen "" \
    --quiet-window 1h --log-level warn >"$WORK/dpersona.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_port "$port"
  secs=$(send "$assocs" DPERSONA "$port")
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  local got; got=$(count_files "$dd/studies" '*.dcm')
  [ "$got" -eq "$N" ] || { echo "bench-gateway: dpersona stored $got of $N" >&2; cat "$WORK/dpersona.log" >&2; return 1; }
  echo "$secs"
}

echo "bench-gateway: $N instances, $((BYTES / 1000000)) MB, $RUNS interleaved runs per receiver; storescp $STORESCP_ARGS; dpersona fsyncs every instance"
# The runs alternate receivers (s,d), (d,s), ... so that a change in the machine's load hits both;
# each pair gives one ratio, and the median ratio is reported next to the best times.
RESULTS=()
for assocs in 1 8; do
  for run in $(seq 1 "$RUNS"); do
    if [ $((run % 2)) -eq 1 ]; then
      s=$(run_storescp "$assocs"); d=$(run_dpersona "$assocs")
    else
      d=$(run_dpersona "$assocs"); s=$(run_storescp "$assocs")
    fi
    RESULTS+=("$assocs $s $d")
  done
done

python3 - "$N" "$BYTES" "${RESULTS[@]}" <<'PY'
import statistics, sys
n, b = int(sys.argv[1]), int(sys.argv[2])
runs = {}
for r in sys.argv[3:]:
    a, s, d = r.split()
    runs.setdefault(int(a), []).append((float(s), float(d)))
print(f"{'associations':>12} {'receiver':>10} {'best s':>8} {'inst/s':>8} {'MB/s':>8}")
for a, pairs in sorted(runs.items()):
    for name, t in (("storescp", min(p[0] for p in pairs)), ("dpersona", min(p[1] for p in pairs))):
        print(f"{a:>12} {name:>10} {t:>8.2f} {n/t:>8.0f} {b/1e6/t:>8.1f}")
    ratios = [s / d for s, d in pairs]
    print(f"{'':>12} {'ratio':>10} best {min(p[0] for p in pairs)/min(p[1] for p in pairs):.2f}x, median of {len(ratios)} pairs {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}) dpersona / storescp throughput")
PY
