"""Training throughput: images/s of stage I and stage II steps for a config on a device.

python3 -m training.bench --config lite --steps 5 [--device cuda] [--data lidc_val.npz] [--json]
Real slices are used when --data is readable, otherwise random images with blob masks (the step
cost does not depend on the pixel values).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from .config import get_config
from .data import MultiRaterSet, load_any
from .model import DPersona, count_parameters
from .trainer import Trainer


def _synthetic(n: int, raters: int, size: int) -> MultiRaterSet:
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (n, 1, size, size)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, raters, size, size), np.uint8)
    for i in range(n):
        for r in range(raters):
            rad = 5 + 3 * r + rng.randint(0, 4)
            masks[i, r] = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 < rad ** 2
    return MultiRaterSet(images, masks, [f"synthetic-{i}/s" for i in range(n)], "synthetic")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: str, steps: int, device: str, data: str = None, warmup: int = 2,
            batch_size: int = None, run_dir: str = None) -> dict:
    cfg = get_config(config)
    if batch_size:
        cfg.batch_size = batch_size
    dev = torch.device(device)
    n = cfg.batch_size * (steps + warmup)
    if data and os.path.exists(data):
        ds = load_any(data, cfg.model.num_raters)
        ds = ds.subset(np.arange(n) % len(ds))
    else:
        ds = _synthetic(min(n, 64), cfg.model.num_raters, cfg.model.image_size)
        ds = ds.subset(np.arange(n) % len(ds))
    import tempfile
    run_dir = run_dir or tempfile.mkdtemp(prefix="bench-")
    trainer = Trainer(cfg, run_dir, ds, ds.subset([0]), device=device, progress=False)
    torch.manual_seed(cfg.seed)
    model = DPersona(cfg.model).to(dev)
    result = {"config": config, "device": str(dev), "batch_size": cfg.batch_size, "steps": steps,
              "parameters": count_parameters(model), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "data": ds.source}
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
    for stage in (1, 2):
        params = [p for m in model.stage1_modules() for p in m.parameters()] if stage == 1 \
            else list(model.heads.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lr)
        trainer._set_modes(model, stage)
        rng = np.random.RandomState(0)
        batches = trainer._batches(rng, stage=1)
        t0 = None
        for i in range(steps + warmup):
            if i == warmup:
                _sync(dev)
                t0 = time.perf_counter()
            img, msk = next(batches)
            parts = trainer._stage1_loss(model, img, msk, rng) if stage == 1 else \
                trainer._stage2_loss(model, img, msk)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
        _sync(dev)
        dt = time.perf_counter() - t0
        result[f"stage{stage}_images_per_second"] = round(steps * cfg.batch_size / dt, 2)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m training.bench", description=__doc__)
    p.add_argument("--config", default="lite")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--data", default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(args.config, args.steps, args.device, args.data, args.warmup, args.batch_size)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['config']:10s} {r['device']:6s} batch {r['batch_size']:3d}  stage I "
              f"{r['stage1_images_per_second']:8.2f} img/s  stage II "
              f"{r['stage2_images_per_second']:8.2f} img/s  ({r['parameters']:,} parameters, "
              f"{r['threads']} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
