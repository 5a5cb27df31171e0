#!/bin/bash
# Round 2 of the CPU fine-tune: 3 more stage-I epochs at half the learning rate, then stage II.
set -e
cd /work/main
PY=/usr/bin/python3
OUT=training/runs/lite-shift/run2
$PY -m training train --stage 1 --config lite --out $OUT --init training/runs/lite-shift/run/stage1/best.pt \
  --set shift_augment=48 --set lr=0.0001 --set images_per_epoch=2400 --set val_limit=300 \
  --epochs 3 --threads 2 --no-progress
$PY -m training train --stage 2 --out $OUT --set images_per_epoch_stage2=1200 --epochs 1 --threads 2 --no-progress
echo DONE
