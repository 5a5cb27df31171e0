"""Model bundle export (docs/model-bundle.md): one ONNX graph serving both stages, manifest.json
with SHA-256 of every file, golden vectors computed by PyTorch on real validation images.

The bundle is written to a temporary directory beside the target and renamed into place, so a
failure never leaves a half-written bundle.
"""
from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import warnings
from typing import Dict, List, Optional

import numpy as np
import torch

from .checkpoint import load_checkpoint, read_checkpoint
from .config import TrainConfig
from .data import load_any, order_raters, to_tensors
from .model import DPersona, ServingGraph

FORMAT_VERSION = 1
INPUT_NAMES = ["image", "eps_samples", "eps_bank"]
OUTPUT_NAMES = ["sample_probs", "rater_probs"]
GOLDEN_TOLERANCE = 1e-4

NODULE_SEGMENT = {
    "label": "Nodule",
    "category": {"scheme": "SCT", "code": "49755003",
                 "meaning": "Morphologically Altered Structure"},
    "type": {"scheme": "SCT", "code": "27925004", "meaning": "Nodule"},
}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_onnx(model: DPersona, path: str, samples: int, bank_size: int, opset: int = 13) -> None:
    """Trace the serving function with dynamic N, S, K and check the graph with onnx.checker."""
    import onnx
    cfg = model.cfg
    model.eval()
    graph = ServingGraph(model).eval()
    dummy = (torch.zeros(2, cfg.in_channels, cfg.image_size, cfg.image_size),
             torch.zeros(2, samples, cfg.latent_size), torch.zeros(2, bank_size, cfg.latent_size))
    dynamic = {"image": {0: "N"}, "eps_samples": {0: "N", 1: "S"}, "eps_bank": {0: "N", 1: "K"},
               "sample_probs": {0: "N", 1: "S"}, "rater_probs": {0: "N"}}
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: newer PyTorch defaults to dynamo
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter warns about shape inference of constants; the signature check
        # below verifies what matters (names, ranks, static and dynamic dimensions)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(graph, dummy, path, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True,
                          **kwargs)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    _check_signature(proto, cfg)


def _check_signature(proto, cfg) -> None:
    """The graph's inputs/outputs must be exactly the contract's names, ranks and static dims."""
    def dims(vi) -> List[object]:
        return [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]
    got = {vi.name: dims(vi) for vi in list(proto.graph.input) + list(proto.graph.output)}
    H = cfg.image_size
    want = {"image": ["N", cfg.in_channels, H, H], "eps_samples": ["N", "S", cfg.latent_size],
            "eps_bank": ["N", "K", cfg.latent_size], "sample_probs": ["N", "S", H, H],
            "rater_probs": ["N", cfg.num_raters, H, H]}
    inputs = [vi.name for vi in proto.graph.input]
    outputs = [vi.name for vi in proto.graph.output]
    if inputs != INPUT_NAMES or outputs != OUTPUT_NAMES:
        raise RuntimeError(f"exported graph has inputs {inputs} and outputs {outputs}")
    for name, shape in want.items():
        if got[name] != shape:
            raise RuntimeError(f"exported tensor {name} has shape {got[name]}, contract {shape}")


def pick_golden_images(cfg: TrainConfig, data_path: str, count: int) -> np.ndarray:
    """The first `count` validation slices where at least two raters outlined something (so the
    parity check covers real structure), as uint8 [count,C,H,W]."""
    ds = load_any(data_path, cfg.model.num_raters)
    nonempty = (ds.masks.reshape(len(ds), ds.num_raters, -1).max(axis=2) > 0).sum(axis=1)
    idx = [i for i in range(len(ds)) if nonempty[i] >= 2][:count]
    if len(idx) < count:
        idx = list(range(min(count, len(ds))))
    if ds.images.shape[2:] != (cfg.model.image_size, cfg.model.image_size):
        raise ValueError(f"{data_path}: images are {ds.images.shape[2:]}, model input is "
                         f"{cfg.model.image_size}")
    return ds.images[idx]


def _write_f32(path: str, array: np.ndarray) -> Dict:
    arr = np.ascontiguousarray(array, dtype="<f4")
    arr.tofile(path)
    return {"shape": list(arr.shape), "file": os.path.basename(path)}


def write_golden(model: DPersona, images_u8: np.ndarray, gdir: str, samples: int, bank_size: int,
                 seed: int) -> Dict:
    """Golden cases: PyTorch eval outputs on real images. Case 'val' uses the default S and K; case
    'val-dynamic' uses one image with other S and K, to exercise the dynamic axes."""
    os.makedirs(gdir, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    L = model.cfg.latent_size
    image, _ = to_tensors(images_u8, np.zeros((len(images_u8), 1, 1, 1), np.uint8))
    cases = []
    specs = [("val", image, samples, bank_size),
             ("val-dynamic", image[:1], max(1, samples // 2 + 1), max(1, bank_size // 3 + 1))]
    model.eval()
    for name, img, s, k in specs:
        eps_s = torch.randn(img.shape[0], s, L, generator=gen)
        eps_b = torch.randn(img.shape[0], k, L, generator=gen)
        with torch.no_grad():
            sp, rp = model.serve(img, eps_s, eps_b)
        prefix = name.replace("-", "_")
        cases.append({"name": name, "inputs": {
            "image": _write_f32(os.path.join(gdir, f"{prefix}_image.f32"), img.numpy()),
            "eps_samples": _write_f32(os.path.join(gdir, f"{prefix}_eps_samples.f32"), eps_s.numpy()),
            "eps_bank": _write_f32(os.path.join(gdir, f"{prefix}_eps_bank.f32"), eps_b.numpy())},
            "outputs": {
            "sample_probs": _write_f32(os.path.join(gdir, f"{prefix}_sample_probs.f32"), sp.numpy()),
            "rater_probs": _write_f32(os.path.join(gdir, f"{prefix}_rater_probs.f32"), rp.numpy())}})
    golden = {"tolerance": GOLDEN_TOLERANCE, "cases": cases}
    with open(os.path.join(gdir, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    return golden


def rater_entries(cfg: TrainConfig) -> List[Dict]:
    R = cfg.model.num_raters
    out = []
    for r in range(R):
        if cfg.rater_order == "area":
            size = " (smallest outline)" if r == 0 else " (largest outline)" if r == R - 1 else ""
            display = f"Rater {r + 1}{size}"
        else:
            display = f"Rater {r + 1}"
        out.append({"index": r, "name": f"rater{r + 1}", "display_name": display})
    return out


def _scalar_metrics(metrics: Dict) -> Dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "images"}


def build_manifest(cfg: TrainConfig, stage: int, checkpoint_state: Dict, metrics: Dict,
                   version: str, name: Optional[str], dataset: str,
                   notes: Optional[str] = None, roi: str = "lung") -> Dict:
    if roi not in ("all", "lung"):
        raise ValueError(f"roi {roi!r}: want 'all' or 'lung'")
    return {
        "format_version": FORMAT_VERSION,
        "name": name or f"dpersona-lidc-{cfg.name}",
        "version": version,
        "description": f"D-Persona {cfg.name}, {dataset}, selected on validation Dice_match"
                       + ("" if stage == 2 else " (stage I only: rater heads untrained)"),
        "config": cfg.name,
        "onnx": "dpersona.onnx",
        "input": {
            "channels": cfg.model.in_channels,
            "height": cfg.model.image_size,
            "width": cfg.model.image_size,
            # The LIDC crops are 8-bit min-max normalised per 128x128 crop (data/README.md).
            "intensity": {"mode": "minmax", "scope": "tile", "quantize_levels": 256},
            # roi "lung": the server runs only tiles placed on the lung of a chest CT slice (the
            # model was trained on lung crops only; docs/model-bundle.md).
            "tiling": {"mode": "tile", "tile": [cfg.model.image_size, cfg.model.image_size],
                       "overlap": cfg.model.image_size // 4, "roi": roi},
        },
        "latent_size": cfg.model.latent_size,
        "raters": rater_entries(cfg),
        "rater_order": cfg.rater_order,
        "defaults": {"samples": cfg.default_samples, "bank_size": cfg.default_bank_size,
                     "threshold": cfg.threshold},
        "segment": NODULE_SEGMENT,
        "algorithm": {"name": "D-Persona", "version": version, "family": "Artificial Intelligence"},
        "training": {"dataset": dataset, "split": "by patient",
                     "epochs": int(checkpoint_state.get("epochs_total", 0)),
                     "seed": cfg.seed, "stage": stage, "notes": notes or "",
                     "schedule": {"lr": cfg.lr, "batch_size": cfg.batch_size,
                                  "images_per_epoch": cfg.images_per_epoch,
                                  "images_per_epoch_stage2": cfg.images_per_epoch_stage2},
                     "deviations": {"encoder_weights": cfg.encoder_weights or "none (from scratch)",
                                    "freeze_backbone_stage2": cfg.freeze_backbone_stage2,
                                    "posterior_sample": cfg.posterior_sample}},
        "metrics": {"validation": _scalar_metrics(metrics)},
        "golden": "golden/golden.json",
        "files": {},
    }


def run_summary(checkpoint: str, batch_size: int) -> Dict[str, Dict]:
    """Epochs and images actually trained per stage, from the run directory's metrics.json files
    (RUN/stageN/best.pt -> RUN/stage{1,2}/metrics.json); empty when they are not there."""
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))
    out = {}
    for s in (1, 2):
        path = os.path.join(run_dir, f"stage{s}", "metrics.json")
        if os.path.isfile(path):
            with open(path) as f:
                m = json.load(f)
            hist = m.get("history", [])
            if hist:
                out[f"stage{s}"] = {"epochs": len(hist), "images": int(hist[-1]["step"]) * batch_size,
                                    "best_epoch": (m.get("best") or {}).get("epoch"),
                                    "train_seconds": round(sum(h.get("train_seconds", 0)
                                                               for h in hist), 1)}
    return out


def export_bundle(checkpoint: str, out_dir: str, golden_data: str, golden_count: int = 2,
                  metrics_path: Optional[str] = None, version: Optional[str] = None,
                  name: Optional[str] = None, opset: int = 13,
                  dataset: str = "LIDC-IDRI (4 raters)", notes: Optional[str] = None,
                  roi: str = "lung") -> str:
    cfg, model, stage = load_checkpoint(checkpoint)
    state = read_checkpoint(checkpoint)
    metrics: Dict = {}
    if metrics_path:
        if not os.path.isfile(metrics_path):
            raise FileNotFoundError(f"metrics file not found: {metrics_path}")
        with open(metrics_path) as f:
            m = json.load(f)
        metrics = m.get("metrics", m)
    elif isinstance(state.get("val"), dict):
        metrics = state["val"]
    runs = run_summary(checkpoint, cfg.batch_size)
    epochs_total = sum(r["epochs"] for r in runs.values()) or int(state.get("epoch", 0))
    version = version or datetime.datetime.utcnow().strftime("%Y.%m.%d-1")
    images = pick_golden_images(cfg, golden_data, golden_count)

    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".bundle-", dir=parent)
    try:
        export_onnx(model, os.path.join(tmp, "dpersona.onnx"), cfg.default_samples,
                    cfg.default_bank_size, opset)
        write_golden(model, images, os.path.join(tmp, "golden"), cfg.default_samples,
                     cfg.default_bank_size, cfg.seed)
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump({"checkpoint": os.path.basename(checkpoint), "stage": stage,
                       "validation": metrics}, f, indent=2)
        manifest = build_manifest(cfg, stage, {"epochs_total": epochs_total}, metrics, version,
                                  name, dataset, notes, roi)
        if runs:
            manifest["training"]["trained"] = runs
        files = {}
        for root, _, names in os.walk(tmp):
            for n in sorted(names):
                rel = os.path.relpath(os.path.join(root, n), tmp).replace(os.sep, "/")
                files[rel] = sha256_file(os.path.join(root, n))
        manifest["files"] = dict(sorted(files.items()))
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
        os.chmod(tmp, 0o755)
        old = None
        if os.path.exists(out_dir):
            old = out_dir + ".old-" + os.path.basename(tmp)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
