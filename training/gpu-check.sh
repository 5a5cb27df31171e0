#!/bin/bash
# One prepared run on a CUDA machine (the session's `run` tool): training throughput of
# `reference` and `lite`, a compatibility pass of the whole CLI on the newer PyTorch (tiny: train,
# export, onnxruntime parity), and a brief `reference` training on a LIDC subset carried in .device/.
# Everything lands in $OUT (log.txt, bench.jsonl, results.tar.gz).
set -u
export OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
D=.device
W=/tmp/gpuwork
rm -rf $W && mkdir -p $W
PY=${PY:-python3}
date -u
nvidia-smi -L
$PY -c 'import torch, onnx, scipy, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "onnx", onnx.__version__, "numpy", numpy.__version__)'
SECONDS=0
for c in reference lite; do
  $PY -m training.bench --config $c --device cuda --steps 30 --warmup 5 --data $D/lidc_val.npz --json | tee -a "$OUT/bench.jsonl"
done
echo "bench done at ${SECONDS}s"
# Compatibility: the whole CLI on this PyTorch.
$PY -m training train --stage 1 --config tiny --out $W/tiny --data $D/lidc_val.npz --epochs 1 --no-progress \
 && $PY -m training train --stage 2 --out $W/tiny --data $D/lidc_val.npz --no-progress \
 && $PY -m training export --checkpoint $W/tiny/stage2/best.pt --out $W/tiny-bundle --golden-data $D/lidc_val.npz --golden-count 1 \
 && $PY -m training.verify $W/tiny-bundle > $W/tiny-verify.json && echo "TINY CLI+EXPORT+ORT OK" || echo "TINY CLI FAILED"
echo "compat done at ${SECONDS}s"
# Brief reference training: epochs sized from the measured stage I throughput.
read E1 E2 < <($PY - <<'PYEOF'
import json
rows = [json.loads(l) for l in open(__import__("os").environ.get("OUT", "/tmp/gpu-out") + "/bench.jsonl")]
r = [x for x in rows if x["config"] == "reference"][0]
e1 = max(1, min(40, int(150 * r["stage1_images_per_second"] * 0.8 / 2000)))
e2 = max(1, min(10, int(40 * r["stage2_images_per_second"] * 0.8 / 2000)))
print(e1, e2)
PYEOF
)
echo "reference: stage I $E1 epochs, stage II $E2 epochs of 2000 images"
timeout 180 $PY -m training train --stage 1 --config reference --out $W/ref --data $D/lidc_train.npz --val $D/lidc_val.npz \
  --set images_per_epoch=2000 --set val_limit=240 --epochs $E1 --no-progress
echo "ref stage I done at ${SECONDS}s"
timeout 70 $PY -m training train --stage 2 --out $W/ref --data $D/lidc_train.npz --val $D/lidc_val.npz --epochs $E2 --no-progress
echo "ref stage II done at ${SECONDS}s"
CK=$W/ref/stage2/best.pt; [ -f $CK ] || CK=$W/ref/stage1/best.pt
timeout 40 $PY -m training evaluate --checkpoint $CK --data $D/lidc_val.npz --samples 10 --bank 100 --json > $W/ref-eval.json
timeout 50 $PY -m training export --checkpoint $CK --out $W/ref-bundle --golden-data $D/lidc_val.npz --golden-count 2 \
  && $PY -m training.verify $W/ref-bundle > $W/ref-verify.json; ls -la $W/ref-bundle
echo "all done at ${SECONDS}s"
cd $W && tar czf "$OUT/results.tar.gz" --exclude='*.pt' --exclude='*.onnx' --exclude='*.f32' tiny ref tiny-verify.json ref-eval.json ref-verify.json ref-bundle/manifest.json 2>/dev/null
ls -la "$OUT"
