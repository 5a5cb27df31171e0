#!/bin/bash
# Training throughput on this machine's CPU: images/s of stage I and stage II steps (batch 12,
# real LIDC slices when ../shared/data is present) for `lite` and `reference`, each measured for the
# trainer's fast formulation and for the direct one it replaced (training.bench --compare: the same
# losses and gradients, tested in training/tests/test_fast_losses.py), alternating between the two
# in ROUNDS rounds so that the load of other processes falls on both alike.
# Usage: scripts/bench-training.sh [STEPS] ; env THREADS (default 1: on a shared machine OpenMP
# threads that wait on each other waste more than they gain), ROUNDS (default 2), WARMUP (default 2
# steps per formulation and stage), DEVICE (default cpu), CONFIGS (default "lite reference").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
$PY -c 'import torch' 2>/dev/null || PY=python3
STEPS=${1:-2}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-2}
DEVICE=${DEVICE:-cpu}
CONFIGS=${CONFIGS:-lite reference}
DATA=../shared/data/lidc/lidc_val.npz
echo "training throughput on $DEVICE ($THREADS threads, $WARMUP warm-up + $ROUNDS x $STEPS timed steps per formulation, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for cfg in $CONFIGS; do
  OPENBLAS_NUM_THREADS=$THREADS $PY -m training.bench --config "$cfg" --steps "$STEPS" --rounds "$ROUNDS" \
    --warmup "$WARMUP" --device "$DEVICE" --threads "$THREADS" --data "$DATA" --compare --json >> "$out"
done
$PY - "$out" <<'PYEOF'
import json, sys
rows = {r["config"]: r for r in map(json.loads, open(sys.argv[1]))}
print(f"{'config':10s} {'stage':6s} {'before (direct)':>16s} {'after (fast)':>13s} {'after/before':>13s}   load")
for name, r in rows.items():
    f = r["formulations"]
    for st in ("stage1", "stage2"):
        b, a = f["direct"][st], f["fast"][st]
        print(f"{name:10s} {st[-1:]:6s} {b:12.2f} img/s {a:9.2f} img/s {a / b:12.2f}x   "
              f"{r['load_before']:.1f} -> {r['load_after']:.1f}")
if "lite" in rows and "reference" in rows:
    l, r = rows["lite"]["formulations"]["fast"], rows["reference"]["formulations"]["fast"]
    print(f"lite / reference (fast): stage I x{l['stage1'] / r['stage1']:.1f}, "
          f"stage II x{l['stage2'] / r['stage2']:.1f}")
PYEOF
