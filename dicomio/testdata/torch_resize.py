"""Reference bilinear resampling with PyTorch for dicomio's resize-mode test.

usage: torch_resize.py IN.f32 H W OUT_H OUT_W OUT.f32 [IN.f32 H W OUT_H OUT_W OUT.f32 ...]
(one run for several jobs: importing torch is slow). Reads H*W float32 values, writes torch.nn.functional.interpolate(mode="bilinear",
align_corners=False, antialias=False) of them at OUT_H x OUT_W.
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

args = sys.argv[1:]
for i in range(0, len(args), 6):
    src, h, w, oh, ow, dst = args[i], int(args[i + 1]), int(args[i + 2]), int(args[i + 3]), int(args[i + 4]), args[i + 5]
    x = torch.from_numpy(np.fromfile(src, dtype="<f4").reshape(1, 1, h, w))
    y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    y.numpy().astype("<f4").tofile(dst)
