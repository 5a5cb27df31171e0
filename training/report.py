"""Validation report: models side by side with the trivial baselines, with the project's metrics
(training/metrics.py), overall and by nodule size.

python3 -m training.report --model new=RUN/stage2/best.pt --model previous=OLD.pt \
    --data lidc_val.npz --size-cuts-from lidc_train.npz --json report.json

Baselines, scored by the same accumulator as the models: `empty` (every sample and every head
predicts nothing) and `union` (every sample and every head predicts the union of the raters'
masks; it uses the answer, so it is the best any single fixed mask can do for the union, not a
model). Size groups go by the largest rater's outline in pixels (the crop's native CT
resolution, about 0.7 mm per pixel); the cut points are the terciles of that area over the
slices of the training split with an outline, so they are fixed before the validation split is
looked at; slices without any outline form their own group.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .data import MultiRaterSet, load_any, order_raters, shift_crops, to_tensors
from .evaluate import for_cpu_inference, make_noise
from .metrics import MetricAccumulator

GROUPS = ("small", "medium", "large", "no outline")


def largest_rater_area(masks: np.ndarray) -> np.ndarray:
    return masks.reshape(masks.shape[0], masks.shape[1], -1).sum(axis=2).max(axis=1)


def size_cut_points(train_masks: np.ndarray) -> List[int]:
    area = largest_rater_area(train_masks)
    area = area[area > 0]
    return [int(round(float(q))) for q in np.percentile(area, [100 / 3, 200 / 3])]


def size_groups(masks: np.ndarray, cuts: Sequence[int]) -> np.ndarray:
    area = largest_rater_area(masks)
    group = np.where(area <= cuts[0], 0, np.where(area <= cuts[1], 1, 2))
    return np.where(area == 0, 3, group)


def summarise(acc: MetricAccumulator, index: Optional[np.ndarray] = None) -> Dict:
    """The accumulator's means over all images, or over the images in `index`."""
    if index is None:
        return acc.result()
    out: Dict[str, object] = {k: float(np.mean(np.asarray(v)[index])) if len(index) else None
                              for k, v in acc.rows.items()}
    out["images"] = int(len(index))
    if acc.per_rater and len(index):
        out["personalised_dice_per_rater"] = [float(x) for x in
                                              np.mean(np.asarray(acc.per_rater)[index], 0)]
        out["matched_dice_per_rater"] = [float(x) for x in
                                         np.mean(np.asarray(acc.per_rater_matched)[index], 0)]
    return out


@torch.no_grad()
def score_model(model, ds: MultiRaterSet, samples: int, bank: int, seed: int,
                threshold: float, batch_size: int = 16) -> MetricAccumulator:
    """As evaluate.evaluate_model (same noise draws), keeping the per-image rows."""
    model.eval()
    for_cpu_inference(model, torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    acc = MetricAccumulator(ds.num_raters, threshold)
    L = model.cfg.latent_size
    for i in range(0, len(ds), batch_size):
        img, _ = to_tensors(ds.images[i:i + batch_size], ds.masks[i:i + batch_size])
        eps_s, eps_b = make_noise(img.shape[0], samples, bank, L, gen)
        sp, rp = model.serve(img.contiguous(memory_format=torch.channels_last), eps_s, eps_b)
        sp, rp = sp.numpy(), rp.numpy()
        for j in range(img.shape[0]):
            acc.update(ds.masks[i + j], sp[j], rp[j])
    return acc


def score_baseline(kind: str, ds: MultiRaterSet, samples: int, threshold: float
                   ) -> MetricAccumulator:
    acc = MetricAccumulator(ds.num_raters, threshold)
    for raters in ds.masks:
        mask = np.zeros(raters.shape[1:], np.float32) if kind == "empty" else \
            raters.max(axis=0).astype(np.float32)
        acc.update(raters, np.repeat(mask[None], samples, 0),
                   np.repeat(mask[None], ds.num_raters, 0))
    return acc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m training.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT")
    p.add_argument("--data", required=True)
    p.add_argument("--size-cuts-from", required=True, help="training split for the cut points")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--bank", type=int, default=100)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--shift", type=int, default=0, help="score crops shifted by up to N px")
    p.add_argument("--threads", type=int)
    p.add_argument("--limit", type=int)
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuts = size_cut_points(load_any(args.size_cuts_from).masks)
    raw = load_any(args.data)
    if args.limit:
        raw = raw.subset(range(min(args.limit, len(raw))))
    report = {"data": args.data, "images": len(raw), "samples": args.samples, "bank": args.bank,
              "seed": args.seed, "shift": args.shift,
              "size_cut_points_px": cuts, "size_rule": "largest rater's area in pixels: small <= "
              f"{cuts[0]} < medium <= {cuts[1]} < large; terciles over {args.size_cuts_from} "
              f"slices with an outline", "results": {}}
    order = None
    for spec in args.model:
        name, _, path = spec.partition("=")
        cfg, model, stage = load_checkpoint(path)
        if order is None:
            order = cfg.rater_order
        elif order != cfg.rater_order:
            raise SystemExit("error: models with different rater orders")
    masks = order_raters(raw.masks, order or "area")
    images = raw.images
    if args.shift:
        images, masks = shift_crops(images, masks, args.shift, np.random.RandomState(args.seed))
    ds = MultiRaterSet(images, masks, raw.ids, raw.source)
    groups = size_groups(ds.masks, cuts)
    report["group_sizes"] = {g: int((groups == i).sum()) for i, g in enumerate(GROUPS)}
    accs = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        cfg, model, stage = load_checkpoint(path)
        t0 = time.time()
        accs[name] = score_model(model, ds, args.samples, args.bank, args.seed, cfg.threshold)
        print(f"{name}: scored {len(ds)} images in {time.time() - t0:.0f} s", file=sys.stderr)
        report.setdefault("checkpoints", {})[name] = path
    for kind in ("empty", "union"):
        accs[f"baseline:{kind}"] = score_baseline(kind, ds, args.samples, 0.5)
    for name, acc in accs.items():
        entry = {"all": summarise(acc)}
        for i, g in enumerate(GROUPS):
            entry[g] = summarise(acc, np.flatnonzero(groups == i))
        report["results"][name] = entry
    text = json.dumps(report, indent=1)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.json)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
