"""Reference decoding with pydicom for dicomio's loader tests.

usage: dump_modality.py OUT_DIR FILE...

For every frame of every file writes OUT_DIR/<SOPInstanceUID>_<frame>.f32 (float32 modality
values: pydicom's pixel_array with the rescale of that frame applied; frame 0 = single-frame
image) and prints one JSON line per frame: {"sop", "frame", "position"}.
"""
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.pixel_data_handlers.util import apply_modality_lut

out_dir = sys.argv[1]
for path in sys.argv[2:]:
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None:
        values = apply_modality_lut(arr, ds).astype(np.float32)
        frames = [(0, values, [float(v) for v in ds.ImagePositionPatient])]
    else:
        frames = []
        for k, fg in enumerate(per_frame):
            pv = fg.PixelValueTransformationSequence[0]
            values = (arr[k].astype(np.float64) * float(pv.RescaleSlope) + float(pv.RescaleIntercept)).astype(np.float32)
            frames.append((k + 1, values, [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient]))
    for frame, values, pos in frames:
        values.astype("<f4").tofile(os.path.join(out_dir, "%s_%d.f32" % (ds.SOPInstanceUID, frame)))
        print(json.dumps({"sop": ds.SOPInstanceUID, "frame": frame, "position": pos}))
