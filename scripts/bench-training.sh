#!/bin/bash
# Training throughput on this machine's CPU: images/s of stage I and stage II steps (batch 12,
# real LIDC slices when ../shared/data is present) for `lite` and `reference`, and their ratio.
# Usage: scripts/bench-training.sh [STEPS] ; env THREADS (default 1: on a shared machine OpenMP
# threads that wait on each other waste more than they gain), DEVICE (default cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
$PY -c 'import torch' 2>/dev/null || PY=python3
STEPS=${1:-3}
THREADS=${THREADS:-1}
DEVICE=${DEVICE:-cpu}
DATA=../shared/data/lidc/lidc_val.npz
echo "training throughput on $DEVICE ($THREADS threads, $STEPS timed steps after 1 warm-up, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
out=$(mktemp)
for cfg in lite reference; do
  $PY -m training.bench --config "$cfg" --steps "$STEPS" --warmup 1 --device "$DEVICE" --threads "$THREADS" --data "$DATA" --json >> "$out"
done
$PY - "$out" <<'PYEOF'
import json, sys
rows = {r["config"]: r for r in map(json.loads, open(sys.argv[1]))}
for name, r in rows.items():
    print(f"{name:10s} stage I {r['stage1_images_per_second']:8.2f} img/s   stage II "
          f"{r['stage2_images_per_second']:8.2f} img/s   ({r['parameters']:,} parameters)")
l, r = rows["lite"], rows["reference"]
print(f"lite / reference: stage I x{l['stage1_images_per_second'] / r['stage1_images_per_second']:.1f}, "
      f"stage II x{l['stage2_images_per_second'] / r['stage2_images_per_second']:.1f}")
PYEOF
rm -f "$out"
