"""Split a multi-rater .npz into parts of at most --max-mib each, by patient (a patient's slices
stay in one part), for uploads with a size limit (a GPU machine that takes 64 MiB per call).
`train --data a.npz,b.npz,c.npz` reads the parts back as one set, in the original order.

python3 -m training.parts ../shared/data/lidc/lidc_train.npz --out .device --max-mib 60
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

import numpy as np

from .data import load_npz


def split(path: str, out: str, max_mib: float) -> List[str]:
    ds = load_npz(path)
    patients = ds.patients()
    # contiguous runs of one patient, in file order
    starts = [0] + [i for i in range(1, len(ds)) if patients[i] != patients[i - 1]] + [len(ds)]
    stem = os.path.basename(path)[: -len(".npz")]
    os.makedirs(out, exist_ok=True)
    files: List[str] = []

    def write(lo: int, hi: int) -> int:
        name = os.path.join(out, f"{stem}.part{len(files) + 1}")
        tmp = name + ".tmp.npz"
        images = ds.images[lo:hi, 0] if ds.images.shape[1] == 1 else ds.images[lo:hi]
        np.savez_compressed(tmp, images=images, masks=ds.masks[lo:hi])
        with open(name + ".ids.txt", "w") as f:
            f.write("\n".join(ds.ids[lo:hi]) + "\n")
        size = os.path.getsize(tmp)
        os.replace(tmp, name + ".npz")
        return size

    total = os.path.getsize(path)
    per_slice = total / max(1, len(ds))
    budget = int(max_mib * 2 ** 20 * 0.9 / per_slice)  # slices per part, with a margin
    lo = 0
    b = 0
    while lo < len(ds):
        hi = lo
        while b + 1 < len(starts) and (starts[b + 1] - lo <= budget or hi == lo):
            b += 1
            hi = starts[b]
        size = write(lo, hi)
        if size > max_mib * 2 ** 20:
            raise SystemExit(f"error: part {len(files) + 1} of {path} is {size / 2 ** 20:.1f} MiB "
                             f"> {max_mib}; use a smaller --max-mib")
        files.append(os.path.join(out, f"{stem}.part{len(files) + 1}.npz"))
        print(f"{files[-1]}: slices {lo}..{hi - 1}, {size / 2 ** 20:.1f} MiB")
        lo = hi
    return files


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m training.parts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("npz")
    p.add_argument("--out", required=True)
    p.add_argument("--max-mib", type=float, default=60)
    args = p.parse_args(argv)
    files = split(args.npz, args.out, args.max_mib)
    print(",".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
