"""Training throughput: images/s of stage I and stage II steps for a config on a device.

python3 -m training.bench --config lite --steps 5 [--device cuda] [--data lidc_val.npz] [--json]
Real slices are used when --data is readable, otherwise random images with blob masks (the step
cost does not depend on the pixel values).
"""
from __future__ import annotations

import argparse
import copy
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
            batch_size: int = None, run_dir: str = None, formulations=("fast",),
            rounds: int = 1) -> dict:
    """images/s of stage I and stage II training steps. With several formulations ("direct": the
    losses as written in the reference; "fast": the same values computed for speed) the timed steps
    alternate between them in `rounds` rounds of `steps` steps each, so that the load of other
    processes on the machine falls on both alike."""
    cfg = get_config(config)
    if batch_size:
        cfg.batch_size = batch_size
    dev = torch.device(device)
    n = cfg.batch_size * (steps * rounds + warmup)
    if data and os.path.exists(data):
        ds = load_any(data, cfg.model.num_raters)
        ds = ds.subset(np.arange(n) % len(ds))
    else:
        ds = _synthetic(min(n, 64), cfg.model.num_raters, cfg.model.image_size)
        ds = ds.subset(np.arange(n) % len(ds))
    import tempfile
    torch.manual_seed(cfg.seed)
    base = DPersona(cfg.model)
    result = {"config": config, "device": str(dev), "batch_size": cfg.batch_size, "steps": steps,
              "rounds": rounds, "warmup": warmup, "parameters": count_parameters(base),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "data": ds.source,
              "load_before": os.getloadavg()[0]}
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
    for stage in (1, 2):
        runs = {}
        for form in formulations:
            trainer = Trainer(cfg, run_dir or tempfile.mkdtemp(prefix="bench-"), ds, ds.subset([0]),
                              device=device, progress=False, fast=(form == "fast"),
                              log=lambda m: None)
            model = trainer.prepare_model(copy.deepcopy(base))
            params = [p for m in model.stage1_modules() for p in m.parameters()] if stage == 1 \
                else list(model.heads.parameters())
            if stage == 2:
                for m in model.stage1_modules():
                    for p in m.parameters():
                        p.requires_grad_(False)
            opt = torch.optim.Adam(params, lr=cfg.lr)
            trainer._set_modes(model, stage)
            rng = np.random.RandomState(0)
            runs[form] = {"trainer": trainer, "model": model, "opt": opt, "rng": rng,
                          "batches": trainer._batches(rng, stage=1), "seconds": 0.0}

        def step(r):
            img, msk = next(r["batches"])
            t = r["trainer"]
            parts = t._stage1_loss(r["model"], img, msk, r["rng"]) if stage == 1 else \
                t._stage2_loss(r["model"], img, msk)
            r["opt"].zero_grad(set_to_none=True)
            parts["loss"].backward()
            r["opt"].step()

        for r in runs.values():
            for _ in range(warmup):
                step(r)
        for _ in range(rounds):
            for r in runs.values():
                _sync(dev)
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(r)
                _sync(dev)
                r["seconds"] += time.perf_counter() - t0
        for form, r in runs.items():
            ips = round(steps * rounds * cfg.batch_size / r["seconds"], 2)
            key = f"stage{stage}_images_per_second"
            result[key if form == formulations[-1] else f"{key}_{form}"] = ips
            result.setdefault("formulations", {}).setdefault(form, {})[f"stage{stage}"] = ips
    result["load_after"] = os.getloadavg()[0]
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
    p.add_argument("--rounds", type=int, default=1,
                   help="alternate the formulations this many times, STEPS steps each")
    p.add_argument("--compare", action="store_true",
                   help="time the direct formulation of the losses (before the speed-up) and the "
                        "fast one (the trainer's default) in the same run, alternating")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    forms = ("direct", "fast") if args.compare else ("fast",)
    r = measure(args.config, args.steps, args.device, args.data, args.warmup, args.batch_size,
                formulations=forms, rounds=args.rounds)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['config']:10s} {r['device']:6s} batch {r['batch_size']:3d}  stage I "
              f"{r['stage1_images_per_second']:8.2f} img/s  stage II "
              f"{r['stage2_images_per_second']:8.2f} img/s  ({r['parameters']:,} parameters, "
              f"{r['threads']} threads)")
        if args.compare:
            d = r["formulations"]["direct"]
            f = r["formulations"]["fast"]
            print(f"{'':10s} direct (before)  stage I {d['stage1']:8.2f} img/s  stage II "
                  f"{d['stage2']:8.2f} img/s;  fast/direct: stage I x{f['stage1'] / d['stage1']:.2f}, "
                  f"stage II x{f['stage2'] / d['stage2']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
