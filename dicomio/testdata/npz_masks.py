"""Unpack a fixture's reader_masks.npz (key = SOPInstanceUID, value uint8 [readers, rows, cols])
into OUT_DIR/<SOPInstanceUID>_<reader>.u8 files and print "<SOPInstanceUID> <readers>" lines.

usage: npz_masks.py NPZ OUT_DIR
"""
import os
import sys

import numpy as np

npz, out = sys.argv[1], sys.argv[2]
with np.load(npz) as z:
    for sop in z.files:
        m = z[sop]
        for r in range(m.shape[0]):
            (m[r] != 0).astype(np.uint8).tofile(os.path.join(out, "%s_%d.u8" % (sop, r)))
        print(sop, m.shape[0])
