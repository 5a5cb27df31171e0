"""Rebuild a training checkpoint from an exported bundle, to fine-tune a model whose checkpoint
was not kept (bundles are committed, checkpoints are not).

python3 -m training.from_bundle models/default --config lite --out run/init.pt --data lidc_train.npz

The ONNX export folds each BatchNorm of the backbone into the convolution before it (eval mode), so
the bundle holds W' = W g/s and b' = b - m g/s (s = sqrt(running_var + eps)) but not W, g, b, m, s
separately. Any split with the same W' and b' is the same served function; the one rebuilt here
keeps W' as the conv weight and gives each BatchNorm the statistics of its input on real training
images (mean m*, variance v*), with g = sqrt(v* + eps) and b = b' + m*: in eval mode it computes
exactly the bundle's function, and in training mode (batch statistics close to m*, v*) it starts
where the bundle's model was, which is what fine-tuning needs. Every other weight is stored in the
bundle under its own name. The rebuilt model is checked against the bundle's golden vectors.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from typing import Dict

import numpy as np
import torch

from .config import get_config
from .data import load_any, to_tensors
from .model import DPersona


FCOMB_FEATURES = "fcomb.features"


def _backbone_conv_order(cfg) -> list:
    """Export a model whose backbone convs hold distinct constant marker values and identity
    BatchNorms, and read back which ONNX initializer each conv's weight became."""
    import onnx
    from onnx import numpy_helper
    from .export import export_onnx
    model = DPersona(cfg.model)
    convs = {}
    for name, mod in model.backbone.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            convs[name] = len(convs) + 1
            with torch.no_grad():
                mod.weight.fill_(float(convs[name]))
        if isinstance(mod, torch.nn.BatchNorm2d):
            with torch.no_grad():
                mod.weight.fill_(1.0)
                mod.bias.zero_()
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
    # Fcomb's first layer is exported as a conv over F (a slice of its weight) plus a MatMul of z
    fcomb_marker = len(convs) + 1
    with torch.no_grad():
        model.fcomb.first.weight.fill_(float(fcomb_marker))
    convs[FCOMB_FEATURES] = fcomb_marker
    by_marker = {v: k for k, v in convs.items()}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "marked.onnx")
        export_onnx(model, path, cfg.default_samples, cfg.default_bank_size)
        proto = onnx.load(path)
    out = {}
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim != 4 or not arr.size:
            continue
        marker = int(round(float(arr.flat[0])))
        # folding divides by sqrt(1 + eps): equal values within 1e-3 of an integer marker
        if marker in by_marker and np.abs(arr - marker).max() < 1e-3:
            out[init.name] = by_marker[marker]
    # Initializer names are numbered by the exporter and differ between exports; the order of
    # the backbone's Conv nodes in the graph does not. Return the backbone convs in graph order.
    # Every Conv node with an unnamed (exporter-made) weight, in graph order: the backbone conv
    # it is, or None (e.g. Fcomb's feature term, a slice of a named weight).
    return [out.get(node.input[1]) for node in proto.graph.node
            if node.op_type == "Conv" and len(node.input) == 3
            and not node.input[1].startswith("model.")]


def rebuild(bundle: str, config: str, data: str, calibration_images: int = 480,
            seed: int = 1337) -> (DPersona, dict):
    import onnx
    from onnx import numpy_helper
    cfg = get_config(config)
    with open(os.path.join(bundle, "manifest.json")) as f:
        manifest = json.load(f)
    proto = onnx.load(os.path.join(bundle, manifest["onnx"]))
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer}
    model = DPersona(cfg.model)
    state = model.state_dict()
    named = 0
    for k in state:
        if "model." + k in inits:
            if inits["model." + k].shape != state[k].shape:
                raise ValueError(f"{bundle}: {k} is {tuple(inits['model.' + k].shape)} in the "
                                 f"bundle, {tuple(state[k].shape)} in config {config}")
            state[k] = inits["model." + k]
            named += 1
    conv_order = _backbone_conv_order(cfg)
    # the bundle's Conv nodes fed by unnamed (folded) initializers, in graph order
    folded_nodes = [(node.input[1], node.input[2]) for node in proto.graph.node
                    if node.op_type == "Conv" and len(node.input) == 3
                    and not node.input[1].startswith("model.")]
    if len(folded_nodes) != len(conv_order):
        raise ValueError(f"{bundle}: {len(folded_nodes)} convs with folded weights, an export of "
                         f"config {config!r} has {len(conv_order)}")
    folded = {conv: node for conv, node in zip(conv_order, folded_nodes) if conv is not None}
    # Fcomb's first layer: W_f from its conv on F, W_z from the MatMul of z (stored transposed)
    w_f = inits[folded.pop(FCOMB_FEATURES)[0]]
    w_z = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "MatMul"
           and n.input[1] in inits and not n.input[1].startswith("model.")
           and tuple(inits[n.input[1]].shape) == (cfg.model.latent_size, cfg.model.fcomb_width)]
    if not w_z:
        raise ValueError(f"{bundle}: Fcomb's latent weights (a MatMul initializer of shape "
                         f"{(cfg.model.latent_size, cfg.model.fcomb_width)}) not found")
    state["fcomb.first.weight"] = torch.cat([w_f, w_z[0].t()[:, :, None, None]], dim=1)
    named += 1
    # The posterior net is not part of the served graph: it starts as the prior (image weights
    # copied, zero weights on the mask channels), so that KL(posterior || prior) starts at 0 and
    # stage I fine-tuning teaches it to read the masks.
    for k in list(state):
        if k.startswith("posterior."):
            prior_w = state["prior." + k[len("posterior."):]]
            if prior_w.shape == state[k].shape:
                state[k] = prior_w.clone()
            else:  # first conv: [W, C + R, 3, 3] vs the prior's [W, C, 3, 3]
                w = torch.zeros_like(state[k])
                w[:, : prior_w.shape[1]] = prior_w
                state[k] = w
    convs = dict(model.backbone.named_modules())
    bn_of = {}  # conv name -> batchnorm name that follows it
    for name, mod in convs.items():
        if isinstance(mod, torch.nn.Conv2d):
            parent, _, leaf = name.rpartition(".")
            if leaf.startswith("conv"):
                bn = (parent + "." if parent else "") + "bn" + leaf[4:]
            elif leaf == "0":  # downsample.0 / decoder conv_bn_relu .0
                bn = parent + ".1"
            else:
                raise ValueError(f"unexpected conv {name}")
            bn_of[name] = bn
    if set(folded) != set(bn_of):
        raise ValueError(f"{bundle}: could not locate every folded backbone conv "
                         f"({len(folded)} of {len(bn_of)})")
    biases = {}
    for conv, (w_name, b_name) in folded.items():
        want = tuple(convs[conv].weight.shape)
        if w_name not in inits or b_name not in inits or tuple(inits[w_name].shape) != want:
            raise ValueError(f"{bundle}: initializer {w_name} for {conv} is missing or not "
                             f"{want}: was the bundle exported from config {config!r}?")
        state[f"backbone.{conv}.weight"] = inits[w_name]
        biases[conv] = inits[b_name]
        bn = f"backbone.{bn_of[conv]}"
        c = inits[b_name].shape[0]
        state[f"{bn}.weight"] = torch.ones(c)
        state[f"{bn}.bias"] = inits[b_name]
        state[f"{bn}.running_mean"] = torch.zeros(c)
        state[f"{bn}.running_var"] = torch.full((c,), 1.0 - convs[bn_of[conv]].eps)
    model.load_state_dict(state)
    model.eval()
    # BatchNorm statistics of the real inputs, then the equivalent (g, b) for them
    ds = load_any(data, cfg.model.num_raters)
    rng = np.random.RandomState(seed)
    idx = np.sort(rng.choice(len(ds), min(calibration_images, len(ds)), replace=False))
    sums: Dict[str, list] = {}
    hooks = []
    for conv, bn in bn_of.items():
        def hook(mod, inp, out, bn=bn):
            x = inp[0].double()
            s = sums.setdefault(bn, [0.0, 0.0, 0])
            s[0] = s[0] + x.sum(dim=(0, 2, 3))
            s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
            s[2] += x.shape[0] * x.shape[2] * x.shape[3]
        hooks.append(convs[bn].register_forward_hook(hook))
    with torch.no_grad():
        for i in range(0, len(idx), 24):
            img, _ = to_tensors(ds.images[idx[i:i + 24]], ds.masks[idx[i:i + 24]])
            model.backbone(img)
    for h in hooks:
        h.remove()
    # The hooks saw BN inputs = conv outputs with the folded weight and no bias.
    for conv, bn in bn_of.items():
        s0, s1, n = sums[bn]
        mean = (s0 / n).float()
        var = (s1 / n - (s0 / n) ** 2).clamp_min(0).float()
        mod = convs[bn]
        with torch.no_grad():
            mod.running_mean.copy_(mean)
            mod.running_var.copy_(var)
            mod.weight.copy_(torch.sqrt(var + mod.eps))
            mod.bias.copy_(biases[conv] + mean)
    report = {"bundle": bundle, "version": manifest.get("version"), "named_tensors": named,
              "folded_convs": len(folded), "calibration_images": int(len(idx))}
    report["golden_max_abs_diff"] = check_golden(model, bundle, manifest)
    return model, report


def check_golden(model: DPersona, bundle: str, manifest: dict) -> float:
    gpath = os.path.join(bundle, manifest["golden"])
    gdir = os.path.dirname(gpath)
    with open(gpath) as f:
        golden = json.load(f)

    def read(spec):
        return torch.from_numpy(np.fromfile(os.path.join(gdir, spec["file"]), dtype="<f4")
                                .reshape(spec["shape"]))
    worst = 0.0
    model.eval()
    with torch.no_grad():
        for case in golden["cases"]:
            ins = case["inputs"]
            sp, rp = model.serve(read(ins["image"]), read(ins["eps_samples"]), read(ins["eps_bank"]))
            for name, got in (("sample_probs", sp), ("rater_probs", rp)):
                worst = max(worst, float((got - read(case["outputs"][name])).abs().max()))
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m training.from_bundle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--config", default="lite", help="the config the bundle was trained with")
    p.add_argument("--data", required=True, help="training images for BatchNorm statistics")
    p.add_argument("--out", required=True, help="checkpoint to write (for train --init)")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--calibration-images", type=int, default=480)
    args = p.parse_args(argv)
    model, report = rebuild(args.bundle, args.config, args.data, args.calibration_images)
    print(json.dumps(report, indent=1))
    if report["golden_max_abs_diff"] > args.tolerance:
        print(f"error: {args.bundle}: the rebuilt model differs from the golden vectors by "
              f"{report['golden_max_abs_diff']:.2e} > {args.tolerance}", file=sys.stderr)
        return 1
    cfg = get_config(args.config)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "stage": 2,
                "rebuilt_from": report}, tmp)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
