#!/bin/bash
# Train the default on the WHOLE LIDC train split on a CUDA machine, resumably, and bring back the
# best checkpoints (issue 11; the CPU path trains the same way with --device cpu).
#
# The device machine takes 64 MiB per call and keeps ignored files between calls, so the data
# goes up in parts (by patient), one call each, then this script runs (from the repository root):
#   /usr/bin/python3 -m training.parts ../shared/data/lidc/lidc_train.npz --out .device --max-mib 60
#   cp ../shared/data/lidc/lidc_val.* .device/
#   run: true   carry [.device/lidc_train.part1.npz, .device/lidc_train.part1.ids.txt, .device/lidc_val.npz, .device/lidc_val.ids.txt]
#   run: true   carry [.device/lidc_train.part2.npz, .device/lidc_train.part2.ids.txt]   (and so on)
#   run: bash training/gpu-train.sh     (CONFIG, E1, E2, T1, T2, INIT as below)
# Measured on an H200 (training/benchmarks/h200): reference 263 stage-I img/s, 496 stage-II img/s,
# so one pass over the 11,903 slices is ~45 s + ~24 s. Defaults: 40 + 15 epochs of reference
# (~30 + ~6 min plus validation on 500 slices), within timeouts T1/T2 (seconds); a run stopped by
# its timeout resumes with the same command (RUN/stageN/last.pt every 100 steps).
set -u
export OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
D=${D:-.device}
RUN=${RUN:-/tmp/gpuwork/run}
PY=${PY:-python3}
CONFIG=${CONFIG:-reference}
E1=${E1:-40}
E2=${E2:-15}
DEVICE=${DEVICE:-cuda}
mkdir -p "$RUN"
nvidia-smi -L || true
PARTS=$(ls $D/lidc_train.part*.npz 2>/dev/null | sort -V | paste -sd, -)
[ -n "$PARTS" ] || PARTS=$D/lidc_train.npz
echo "data: $PARTS"
COMMON=(--out "$RUN" --data "$PARTS" --val $D/lidc_val.npz --device "$DEVICE" --no-progress --checkpoint-every 100)
S1=(--stage 1 --config "$CONFIG" --set shift_augment=48 --set flip_augment=true --set rot90_augment=true
    --set val_limit=500 --epochs "$E1")
[ -n "${INIT:-}" ] && S1+=(--init "$INIT")
[ -f "$RUN/stage1/last.pt" ] && S1+=(--resume)
SECONDS=0
if [ ! -f "$RUN/stage1/done" ]; then
  timeout "${T1:-2400}" $PY -m training train "${S1[@]}" "${COMMON[@]}" && touch "$RUN/stage1/done"
fi
echo "stage I at ${SECONDS}s"
S2=(--stage 2 --epochs "$E2")
[ -f "$RUN/stage2/last.pt" ] && S2+=(--resume)
if [ -f "$RUN/stage1/done" ] && [ ! -f "$RUN/stage2/done" ]; then
  timeout "${T2:-600}" $PY -m training train "${S2[@]}" "${COMMON[@]}" && touch "$RUN/stage2/done"
fi
echo "stage II at ${SECONDS}s"
for s in 1 2; do [ -f "$RUN/stage$s/best.pt" ] && cp "$RUN/stage$s/best.pt" "$OUT/stage$s-best.pt"; done
(cd "$RUN/.." && tar czf "$OUT/run-record.tar.gz" --exclude='*.pt' "$(basename "$RUN")")
ls -la "$OUT"
