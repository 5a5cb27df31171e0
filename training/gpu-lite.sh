#!/bin/bash
# Second prepared CUDA run: train `lite` (stage I then II) on the LIDC train subset carried in
# .device/ (whole patients, every third patient of the train split), select on the validation
# subset, and bring back the best checkpoints for export and full-validation scoring on the CPU.
set -u
export OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
D=.device
W=/tmp/gpuwork
rm -rf $W && mkdir -p $W
PY=${PY:-python3}
E1=${E1:-10}
E2=${E2:-3}
nvidia-smi -L
SECONDS=0
timeout ${T1:-215} $PY -m training train --stage 1 --config lite --out $W/lite --data $D/lidc_train.npz --val $D/lidc_val.npz \
  --set images_per_epoch=3600 --set val_limit=240 --epochs $E1 --no-progress
echo "stage I done at ${SECONDS}s"
cp $W/lite/stage1/best.pt "$OUT/stage1-best.pt"
timeout ${T2:-60} $PY -m training train --stage 2 --out $W/lite --data $D/lidc_train.npz --val $D/lidc_val.npz --epochs $E2 --no-progress
echo "stage II done at ${SECONDS}s"
cp $W/lite/stage2/best.pt "$OUT/stage2-best.pt"
cd $W && tar czf "$OUT/lite-run.tar.gz" --exclude='*.pt' lite
ls -la "$OUT"
