#!/usr/bin/env python3
"""PyTorch eager baseline for the inference benchmark (scripts/bench-inference.sh).

Two sub-commands:

  make-bundle --config lite --out DIR [--seed 1]
      Builds the training package's DPersona for a config with seeded random weights, exports the
      serving function (both stages, one backbone pass) to ONNX, and writes a bundle in the
      docs/model-bundle.md layout plus `weights.pt` (the very same weights, for the eager baseline).
      Random weights cost exactly what trained weights cost, and the bundle is bit-for-bit the
      model the eager side runs, which is what a same-weights comparison needs.

  bench --bundle DIR --threads T --samples 10,50 --bank 100,500 --batch 1,8 [--iters N]
      Times DPersona.serve in eager mode (eval, no_grad) on the bundle's weights.pt, one warm-up
      then N timed calls per combination, and prints one JSON line per combination:
      {"ms_per_slice": fastest call / batch, "slices_per_s": ..., "mean_ms_per_slice": ...}.
      One slice = one 128x128 model input.

Run with Debian's /usr/bin/python3 (it has torch) from the repository root.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from training.config import get_config  # noqa: E402
from training.model import DPersona, ServingGraph  # noqa: E402


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_model(config: str, seed: int) -> DPersona:
    cfg = get_config(config)
    torch.manual_seed(seed)
    model = DPersona(cfg.model)
    model.eval()
    return model


def make_bundle(args) -> None:
    cfg = get_config(args.config)
    model = build_model(args.config, args.seed)
    mc = cfg.model
    out = args.out
    os.makedirs(os.path.join(out, "golden"), exist_ok=True)
    size = mc.image_size
    L = mc.latent_size
    gen = torch.Generator().manual_seed(args.seed)
    image = torch.rand(2, mc.in_channels, size, size, generator=gen)
    eps_s = torch.randn(2, 3, L, generator=gen)
    eps_b = torch.randn(2, 20, L, generator=gen)
    graph = ServingGraph(model).eval()
    onnx_path = os.path.join(out, "dpersona.onnx")
    torch.onnx.export(graph, (image, eps_s, eps_b), onnx_path, opset_version=17,
                      input_names=["image", "eps_samples", "eps_bank"],
                      output_names=["sample_probs", "rater_probs"],
                      dynamic_axes={"image": {0: "N"}, "eps_samples": {0: "N", 1: "S"},
                                    "eps_bank": {0: "N", 1: "K"},
                                    "sample_probs": {0: "N", 1: "S"}, "rater_probs": {0: "N"}})
    with torch.no_grad():
        sp, rp = model.serve(image, eps_s, eps_b)
    arrays = {"image.f32": image, "eps_samples.f32": eps_s, "eps_bank.f32": eps_b,
              "sample_probs.f32": sp, "rater_probs.f32": rp}
    for name, t in arrays.items():
        t.numpy().astype("<f4").tofile(os.path.join(out, "golden", name))

    def arr(name, t):
        return {"shape": list(t.shape), "file": name}
    golden = {"tolerance": 1e-4, "cases": [{
        "name": "bench-random",
        "inputs": {"image": arr("image.f32", image), "eps_samples": arr("eps_samples.f32", eps_s),
                   "eps_bank": arr("eps_bank.f32", eps_b)},
        "outputs": {"sample_probs": arr("sample_probs.f32", sp),
                    "rater_probs": arr("rater_probs.f32", rp)}}]}
    with open(os.path.join(out, "golden", "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    torch.save(model.state_dict(), os.path.join(out, "weights.pt"))
    files = ["dpersona.onnx", "golden/golden.json", "weights.pt"] + [f"golden/{n}" for n in arrays]
    manifest = {
        "format_version": 1,
        "name": f"bench-{args.config}",
        "version": f"random-seed-{args.seed}",
        "description": f"benchmark bundle: {args.config} config, seeded random weights (not trained)",
        "config": args.config,
        "onnx": "dpersona.onnx",
        "input": {"channels": mc.in_channels, "height": size, "width": size,
                  "intensity": {"mode": "minmax", "scope": "tile", "quantize_levels": 256},
                  "tiling": {"mode": "tile", "tile": [size, size], "overlap": 32}},
        "latent_size": L,
        "raters": [{"index": r, "name": f"rater{r + 1}", "display_name": f"Rater {r + 1}"}
                   for r in range(mc.num_raters)],
        "rater_order": "area",
        "defaults": {"samples": 10, "bank_size": 100, "threshold": 0.5},
        "segment": {"label": "Nodule",
                    "category": {"scheme": "SCT", "code": "49755003",
                                 "meaning": "Morphologically Altered Structure"},
                    "type": {"scheme": "SCT", "code": "27925004", "meaning": "Nodule"}},
        "algorithm": {"name": "D-Persona", "version": f"bench-{args.config}",
                      "family": "Artificial Intelligence"},
        "golden": "golden/golden.json",
        "files": {n: sha256(os.path.join(out, n)) for n in files},
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps({"bundle": out, "config": args.config,
                      "parameters": sum(p.numel() for p in model.parameters())}))


def ints(text: str):
    return [int(x) for x in text.split(",") if x]


def bench(args) -> None:
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.bundle, "manifest.json")) as f:
        manifest = json.load(f)
    model = build_model(manifest["config"], 0)
    model.load_state_dict(torch.load(os.path.join(args.bundle, "weights.pt")))
    model.eval()
    mc = model.cfg
    size = mc.image_size
    for samples in ints(args.samples):
        for bank in ints(args.bank):
            for batch in ints(args.batch):
                gen = torch.Generator().manual_seed(1)
                image = torch.rand(batch, mc.in_channels, size, size, generator=gen)
                eps_s = torch.randn(batch, samples, mc.latent_size, generator=gen)
                eps_b = torch.randn(batch, bank, mc.latent_size, generator=gen)
                times = []
                with torch.no_grad():
                    model.serve(image, eps_s, eps_b)  # warm-up
                    for _ in range(args.iters):
                        t0 = time.perf_counter()
                        model.serve(image, eps_s, eps_b)
                        times.append(time.perf_counter() - t0)
                # The fastest call is the least disturbed by other work on a shared machine; the
                # Go side reports the same statistic.
                per_slice = min(times) / batch
                print(json.dumps({"config": manifest["config"], "samples": samples, "bank": bank,
                                  "batch": batch, "iters": args.iters, "threads": args.threads,
                                  "ms_per_slice": per_slice * 1e3, "slices_per_s": 1 / per_slice,
                                  "mean_ms_per_slice": sum(times) / len(times) / batch * 1e3,
                                  "torch": torch.__version__}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    mb = sub.add_parser("make-bundle")
    mb.add_argument("--config", default="lite")
    mb.add_argument("--out", required=True)
    mb.add_argument("--seed", type=int, default=1)
    b = sub.add_parser("bench")
    b.add_argument("--bundle", required=True)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--samples", default="10,50", help="comma-separated S values")
    b.add_argument("--bank", default="100,500", help="comma-separated K values")
    b.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    b.add_argument("--iters", type=int, default=3)
    args = p.parse_args()
    {"make-bundle": make_bundle, "bench": bench}[args.cmd](args)


if __name__ == "__main__":
    main()
