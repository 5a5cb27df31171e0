#!/bin/bash
# CPU fine-tune of the default lite model with translation augmentation (session 2).
set -e
cd /work/main
PY=/usr/bin/python3
OUT=training/runs/lite-shift/run
$PY -m training train --stage 1 --config lite --out $OUT --init training/runs/lite-gpu/stage2-best.pt \
  --set shift_augment=48 --set lr=0.0002 --set images_per_epoch=2400 --set val_limit=300 \
  --epochs 3 --threads 2 --no-progress
$PY -m training train --stage 2 --out $OUT --set images_per_epoch_stage2=1200 --epochs 1 --threads 2 --no-progress
echo DONE
