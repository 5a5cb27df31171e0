"""python3 -m training {prepare, train, evaluate, export}."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                            "shared", "data", "lidc")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=os.path.join(DEFAULT_DATA, "lidc_train.npz"),
                   help="training data: a .npz (images, masks) or a LIDC-IDRI-slices PNG tree")
    p.add_argument("--val", default=None,
                   help="validation data (.npz or PNG tree); default: lidc_val.npz beside --data if "
                        "it exists, else a by-patient split of --data (--val-fraction)")
    p.add_argument("--val-fraction", type=float, default=0.1)


def _load_train_val(args, num_raters: int):
    from .data import load_any, split_by_patient
    train = load_any(args.data, num_raters)
    val_path = args.val
    if val_path is None and args.data.endswith("_train.npz"):
        cand = args.data[: -len("_train.npz")] + "_val.npz"
        if os.path.isfile(cand):
            val_path = cand
    if val_path is None:
        train, val = split_by_patient(train, args.val_fraction)
    else:
        val = load_any(val_path, num_raters)
    overlap = set(train.patients()) & set(val.patients())
    if overlap:
        raise SystemExit(f"error: {len(overlap)} patients are in both the training and the "
                         f"validation data (split by patient), e.g. {sorted(overlap)[0]}")
    return train, val


def _config(args, base=None):
    """The config named by --config (or `base`, a run's config.json), with the command line's
    overrides applied."""
    from .config import get_config
    cfg = base if base is not None else get_config(args.config)
    if getattr(args, "raters", None):
        cfg.model.num_raters = args.raters
    if getattr(args, "rater_order", None):
        cfg.rater_order = args.rater_order
    if getattr(args, "encoder_weights", None):
        cfg.encoder_weights = os.path.abspath(args.encoder_weights)
    for kv in getattr(args, "set", None) or []:
        key, _, value = kv.partition("=")
        target = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            target = getattr(target, part)
        if not hasattr(target, parts[-1]):
            raise SystemExit(f"error: --set {key}: no such config field")
        old = getattr(target, parts[-1])
        val = json.loads(value) if value not in ("None", "null") else None
        setattr(target, parts[-1], tuple(val) if isinstance(old, tuple) else val)
    return cfg


def cmd_prepare(args) -> int:
    """Read a PNG tree or .npz, check it, and write <out>/<name>_{train,val}.npz + ids."""
    import numpy as np
    from .data import load_any, split_by_patient
    ds = load_any(args.source, args.raters)
    nonempty = (ds.masks.reshape(len(ds), ds.num_raters, -1).max(axis=2) > 0).sum(axis=1)
    print(f"{ds.source}: {len(ds)} slices, {len(set(ds.patients()))} patients, "
          f"{ds.num_raters} raters, images {tuple(ds.images.shape[1:])}; slices with k non-empty "
          f"raters: " + ", ".join(f"{k}: {int((nonempty == k).sum())}"
                                  for k in range(ds.num_raters + 1)))
    if not args.out:
        return 0
    os.makedirs(args.out, exist_ok=True)
    parts = dict(zip(("train", "val"), split_by_patient(ds, args.val_fraction))) \
        if args.val_fraction > 0 else {"train": ds}
    for split, part in parts.items():
        base = os.path.join(args.out, f"{args.name}_{split}")
        tmp = base + ".tmp.npz"
        images = part.images[:, 0] if part.images.shape[1] == 1 else part.images
        np.savez_compressed(tmp, images=images, masks=part.masks)
        os.replace(tmp, base + ".npz")
        with open(base + ".ids.txt", "w") as f:
            f.write("\n".join(part.ids) + "\n")
        print(f"wrote {base}.npz ({len(part)} slices, {len(set(part.patients()))} patients)")
    return 0


def cmd_train(args) -> int:
    import torch
    from .trainer import Trainer
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg_file = os.path.join(args.out, "config.json")
    if os.path.isfile(cfg_file) and (args.resume or args.stage == 2) and args.config is None:
        # The run's own config; overrides still apply (and a changed value is then refused by
        # the trainer as a different config, rather than silently ignored).
        from .config import TrainConfig
        cfg = _config(args, TrainConfig.load(cfg_file))
    else:
        args.config = args.config or "lite"
        cfg = _config(args)
    train, val = _load_train_val(args, cfg.model.num_raters)
    print(f"config {cfg.name}: {len(train)} training / {len(val)} validation slices, "
          f"{cfg.model.num_raters} raters, run directory {args.out}", file=sys.stderr)
    trainer = Trainer(cfg, args.out, train, val, device=args.device, progress=not args.no_progress,
                      log=lambda m: print(m, file=sys.stderr, flush=True),
                      fast=not args.direct_losses, checkpoint_every=args.checkpoint_every)
    result = trainer.train(args.stage, resume=args.resume, init_checkpoint=args.init,
                           epochs=args.epochs, reschedule=args.reschedule)
    print(json.dumps(result["best"], indent=2))
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np
    import torch
    from .checkpoint import load_checkpoint
    from .data import load_any, order_raters, MultiRaterSet
    from .evaluate import evaluate_model
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, model, stage = load_checkpoint(args.checkpoint)
    ds = load_any(args.data, cfg.model.num_raters)
    if args.limit:
        ds = ds.subset(range(min(args.limit, len(ds))))
    masks = order_raters(ds.masks, cfg.rater_order)
    images = ds.images
    if args.shift:
        # Off-centre crops, as full-slice tiles present nodules: a fixed random shift per image.
        from .data import shift_crops
        images, masks = shift_crops(images, masks, args.shift, np.random.RandomState(args.seed))
    ds = MultiRaterSet(images, masks, ds.ids, ds.source)
    device = torch.device(args.device) if args.device else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    from .evaluate import for_cpu_inference
    for_cpu_inference(model, device)
    res = evaluate_model(model, ds, samples=args.samples or cfg.default_samples,
                         bank_size=args.bank or cfg.default_bank_size, heads=(stage == 2),
                         threshold=cfg.threshold, seed=args.seed, device=device)
    res = {"checkpoint": args.checkpoint, "data": args.data, "stage": stage, "shift": args.shift,
           "samples": args.samples or cfg.default_samples,
           "bank_size": args.bank or cfg.default_bank_size, "metrics": res}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res["metrics"].items():
            print(f"{k:32s} {v}")
    return 0


def cmd_export(args) -> int:
    from .export import export_bundle
    path = export_bundle(args.checkpoint, args.out, golden_data=args.golden_data,
                         golden_count=args.golden_count, metrics_path=args.metrics,
                         version=args.version, name=args.name, opset=args.opset,
                         dataset=args.dataset, notes=args.notes, roi=args.roi)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m training", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    pp = sub.add_parser("prepare", help="check a PNG tree / npz and write train/val npz by patient")
    pp.add_argument("source", help="LIDC-IDRI-slices PNG tree or .npz")
    pp.add_argument("--out", help="output directory (omit to only check and summarise)")
    pp.add_argument("--name", default="lidc")
    pp.add_argument("--val-fraction", type=float, default=0.1)
    pp.add_argument("--raters", type=int, default=None, help="required rater count")
    pp.set_defaults(func=cmd_prepare)

    pt = sub.add_parser("train", help="train stage 1 or 2")
    pt.add_argument("--stage", type=int, choices=(1, 2), required=True)
    pt.add_argument("--config", default=None,
                    help="reference | lite | tiny | config.json (default lite; stage 2 and --resume "
                         "reuse the run's config.json)")
    pt.add_argument("--out", required=True, help="run directory")
    _add_data_args(pt)
    pt.add_argument("--raters", type=int, help="override the config's rater count")
    pt.add_argument("--rater-order", choices=("area", "as-is"))
    pt.add_argument("--encoder-weights", help="ResNet encoder state_dict to start from")
    pt.add_argument("--set", action="append", metavar="KEY=JSON",
                    help="override a config field, e.g. --set batch_size=24 --set model.stem_width=32")
    pt.add_argument("--epochs", type=int, help="override the stage's epoch count")
    pt.add_argument("--resume", action="store_true", help="continue from RUN/stageN/last.pt")
    pt.add_argument("--reschedule", action="store_true",
                    help="with --resume and a new --epochs: continue the cosine learning-rate "
                         "schedule over the new total (shorten or extend a run on purpose)")
    pt.add_argument("--init", help="stage 2: stage I checkpoint (default RUN/stage1/best.pt); "
                                   "stage 1: a checkpoint to fine-tune from")
    pt.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    pt.add_argument("--threads", type=int, help="torch CPU threads")
    pt.add_argument("--no-progress", action="store_true")
    pt.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS",
                    help="also write RUN/stageN/last.pt every STEPS steps within an epoch, so a "
                         "stopped run loses at most that much (0: only at the end of epochs)")
    pt.add_argument("--direct-losses", action="store_true",
                    help="compute the losses in the direct (slower) formulation the fast one "
                         "replaced; same values, for comparisons")
    pt.set_defaults(func=cmd_train)

    pe = sub.add_parser("evaluate", help="metrics of a checkpoint on a data set")
    pe.add_argument("--checkpoint", required=True, help="best.pt / last.pt of a run")
    pe.add_argument("--data", default=os.path.join(DEFAULT_DATA, "lidc_val.npz"))
    pe.add_argument("--samples", type=int, help="stage I samples S (default: config)")
    pe.add_argument("--bank", type=int, help="stage II bank size K (default: config)")
    pe.add_argument("--limit", type=int, help="first N images only")
    pe.add_argument("--shift", type=int, default=0,
                    help="shift each image (and its masks) by up to N pixels per axis, reflect "
                         "padding, seeded by --seed: how the model does on off-centre nodules")
    pe.add_argument("--seed", type=int, default=1337)
    pe.add_argument("--device")
    pe.add_argument("--threads", type=int)
    pe.add_argument("--json", action="store_true", help="print JSON")
    pe.set_defaults(func=cmd_evaluate)

    px = sub.add_parser("export", help="write a model bundle (docs/model-bundle.md)")
    px.add_argument("--checkpoint", required=True)
    px.add_argument("--out", required=True, help="bundle directory (replaced atomically)")
    px.add_argument("--golden-data", default=os.path.join(DEFAULT_DATA, "lidc_val.npz"),
                    help="real images for the golden vectors")
    px.add_argument("--golden-count", type=int, default=2)
    px.add_argument("--metrics", help="metrics JSON to record (evaluate --json output)")
    px.add_argument("--version", default=None)
    px.add_argument("--name", default=None)
    px.add_argument("--dataset", default="LIDC-IDRI (4 raters)")
    px.add_argument("--opset", type=int, default=13)
    px.add_argument("--notes", help="free text recorded in manifest training.notes")
    px.add_argument("--roi", choices=["all", "lung"], default="lung",
                    help="which tiles of a slice the server runs (manifest input.tiling.roi): lung "
                         "(chest CT, tiles placed on the lung; for lung-nodule models such as "
                         "LIDC-IDRI) or all")
    px.set_defaults(func=cmd_export)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data import DataError
    from .trainer import TrainingError
    try:
        return args.func(args)
    except (DataError, TrainingError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
