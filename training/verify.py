"""Check a bundle's golden vectors with onnxruntime's Python package, when it is installed.

python3 -m training.verify BUNDLE_DIR  (the Go side has its own check: `dpersona models verify`).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np


def verify_bundle(bundle: str) -> dict:
    import onnxruntime as ort
    with open(os.path.join(bundle, "manifest.json")) as f:
        manifest = json.load(f)
    for name, digest in manifest["files"].items():
        with open(os.path.join(bundle, name), "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != digest:
                raise ValueError(f"{bundle}/{name}: SHA-256 differs from the manifest")
    gpath = os.path.join(bundle, manifest["golden"])
    gdir = os.path.dirname(gpath)
    with open(gpath) as f:
        golden = json.load(f)
    sess = ort.InferenceSession(os.path.join(bundle, manifest["onnx"]),
                                providers=["CPUExecutionProvider"])

    def read(spec):
        return np.fromfile(os.path.join(gdir, spec["file"]), dtype="<f4").reshape(spec["shape"])
    report = {"onnxruntime": ort.__version__, "cases": []}
    ok = True
    for case in golden["cases"]:
        feeds = {k: read(v) for k, v in case["inputs"].items()}
        outs = sess.run(list(case["outputs"]), feeds)
        diffs = {k: float(np.abs(o - read(case["outputs"][k])).max())
                 for k, o in zip(case["outputs"], outs)}
        passed = all(d <= golden["tolerance"] for d in diffs.values())
        ok &= passed
        report["cases"].append({"name": case["name"], "max_abs_diff": diffs, "pass": passed})
    report["pass"] = ok
    return report


if __name__ == "__main__":
    rep = verify_bundle(sys.argv[1])
    print(json.dumps(rep, indent=1))
    sys.exit(0 if rep["pass"] else 1)
