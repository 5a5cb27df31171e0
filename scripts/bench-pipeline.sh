#!/usr/bin/env bash
# Pipeline benchmark: from the last instance received to the SEG objects stored at the destination
# (a real Orthanc, C-STORE), through the real gateway (bin/dpersona serve, every role, embedded
# NATS JetStream), for the demo study (7 LIDC slices) and a 100-slice study built from the same
# real slices. The quiet window (the wait that decides a study is complete) is reported apart.
#
# Baseline, measured in the same run on the same machine: `dpersona infer` on the same series
# (the model alone, no network, no bus): "bus overhead" is what the gateway adds to the model.
#
# Env: BENCH_MODEL (default models/default, else the small test model inference/testdata/tiny),
# BENCH_QUIET (quiet window, default 1s), BENCH_SLICES (default 100), BENCH_REPS (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/dpersona
WORK=$ROOT/var/bench-pipeline
QUIET=${BENCH_QUIET:-1s}
SLICES=${BENCH_SLICES:-100}
REPS=${BENCH_REPS:-1}
MODEL=${BENCH_MODEL:-models/default}
if [ ! -f "$MODEL/manifest.json" ]; then
  echo "bench-pipeline: no bundle at $MODEL; using the small test model inference/testdata/tiny (timings of the path, not of the production model)"
  MODEL=inference/testdata/tiny
fi
die() { echo "bench-pipeline: $*" >&2; exit 1; }
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
require_bench_tools

bench_workspace

# make_study NAME N: N slices with fresh Study/Series/SOP UIDs, cycling the real lidc-ct-0005
# pixels along z at 2.5 mm (one frame of reference), so each run is a new study for the gateway.
make_study() {
  local name=$1 n=$2 dir=$WORK/studies/$1 src=("$ROOT"/testdata/dicom/lidc-ct-0005/*.dcm)
  mkdir -p "$dir"
  # n+2 fresh UIDs (study, series, one per instance), then n z positions.
  mapfile -t v < <($PY -c "import uuid,sys; n=int(sys.argv[1]); [print('2.25.%d' % uuid.uuid4().int) for _ in range(n + 2)]; [print(round(-120.045 - 2.5 * i, 3)) for i in range(n)]" "$n")
  for ((i = 0; i < n; i++)); do
    local f=$dir/$(printf '%03d' "$i").dcm
    cp "${src[$((i % ${#src[@]}))]}" "$f"
    dcmodify -nb -m "(0020,000d)=${v[0]}" -m "(0020,000e)=${v[1]}" -m "(0008,0018)=${v[$((i + 2))]}" \
      -m "(0020,0013)=$((i + 1))" -m "(0020,0032)=-180.0\\-180.0\\${v[$((n + 2 + i))]}" "$f" >/dev/null
  done
  echo "${v[0]}"
}

start_bench_orthanc
GW_DICOM=$(free_port); GW_HTTP=$(free_port)
"$BIN" serve --data-dir "$WORK/data" --dicom-listen "127.0.0.1:$GW_DICOM" --http-listen "127.0.0.1:$GW_HTTP" \
  --quiet-window "$QUIET" --model "$MODEL" --forward-to "ORTHANC@127.0.0.1:$ORTHANC_DICOM" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$GW_HTTP/api/studies" 60 || die "the gateway did not start (see $WORK/serve.log)"

echo "model $MODEL, quiet window $QUIET, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for spec in "demo:7" "ct$SLICES:$SLICES"; do
    name=${spec%%:*}; n=${spec##*:}
    study=$(make_study "$name-$rep" "$n")
    dir=$WORK/studies/$name-$rep
    # Baseline: the model alone on the same files (the infer command's own timing, engine load excluded).
    offline=$("$BIN" infer --model "$MODEL" --out "$WORK/offline/$name-$rep" "$dir" 2>/dev/null | \
      sed -n 's/.* tiles in \([0-9.]*\)s.*/\1/p' | head -1)
    TCP_NODELAY=1 timeout 300 storescu -aet BENCH -aec DPERSONA 127.0.0.1 "$GW_DICOM" "$dir"/*.dcm || die "storescu failed"
    state=$(wait_study_state "http://127.0.0.1:$GW_HTTP/api/studies" "$study" 1800)
    [ "$state" = done ] || die "study $name ended $state (see $WORK/serve.log)"
    # The model's own time inside the gateway, from the worker's log line for this study.
    model_s=$(grep '"series processed"' "$WORK/serve.log" | grep '"component":"bus"' | grep "\"$study\"" | \
      sed -n 's/.*"seconds":\([0-9.e+-]*\).*/\1/p' | tail -1)
    curl -fsS "http://127.0.0.1:$GW_HTTP/api/studies" | $PY -c '
import datetime, json, re, sys
study, name, n, offline, model_s = sys.argv[1:6]
def ts(v):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", v)
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return base.timestamp() + float("0." + (m.group(2) or "0"))
for s in json.load(sys.stdin):
    if s["study_instance_uid"] != study:
        continue
    last, comp, inf, done = (ts(s[k]) for k in ("last_received_at", "completed_at", "inferred_at", "done_at"))
    print("\t".join([name, n, f"{comp-last:.2f}", f"{inf-comp:.2f}", f"{done-inf:.2f}", f"{done-comp:.2f}", f"{done-last:.2f}", offline or "nan", model_s or "nan"]))
' "$study" "$name" "$n" "$offline" "$model_s" >>"$RESULTS"
  done
done

$PY - "$RESULTS" "$QUIET" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
head = ["study", "slices", "quiet window s", "complete->SEG at PACS s", "last instance->SEG at PACS s",
        "model in gateway s", "gateway overhead s", "model alone s (baseline)", "infer+export / baseline"]
out = []
for r in rows:
    name, n, quiet, inf, exp, proc, total, offline, model_s = r
    off, model = float(offline), float(model_s)
    out.append([name, n, quiet, proc, total, f"{model:.2f}", f"{float(proc) - model:.2f}", f"{off:.2f}",
                f"{float(proc)/off:.2f}x" if off > 0 else "-"])
w = [max(len(str(x[i])) for x in out + [head]) for i in range(len(head))]
print()
print("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
print("  ".join("-" * w[i] for i in range(len(head))))
for r in out:
    print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
print()
print("quiet window: the configured wait after the last instance, reported apart;")
print("gateway overhead = (complete -> SEG acknowledged by the PACS) - the model's own run inside the gateway")
print("  (bus events, state, object store, reading the series, C-STORE);")
print("baseline = `dpersona infer` on the same series in the same run (the model alone, no gateway);")
print("  on a shared machine the model's time alone varies by tens of percent between runs.")
print("For scale only (not measured here): MONAI Deploy's published best is 2.5 minutes end to end for a CT.")
for r in out:
    goal = float(r[3]) <= 5.0
    print(f"goal (SEG at the PACS within quiet window + 5 s) for {r[0]}: {'met' if goal else 'NOT met'} ({r[3]} s after the quiet window)")
EOF
