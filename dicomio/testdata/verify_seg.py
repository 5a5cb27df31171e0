"""Independent check of a SEG written by dicomio, with pydicom.

usage: verify_seg.py SEG EXPECTED_JSON [SEG EXPECTED_JSON ...]

EXPECTED_JSON: {"type": "BINARY"|"FRACTIONAL", "max": 255, "rows": R, "cols": C,
  "labels": [...], "frames": [{"segment": n, "sop": uid, "frame": 0|k, "position": [x,y,z],
  "mask": "path/to/file.u8"}]}
pydicom unpacks the pixel data itself; every frame must equal its mask file (R*C bytes) and
reference the expected segment, source instance (and frame) and position. Prints
"OK <seg> <frames>" per SEG, or "FAIL <seg> <reason>" and exits 1.
"""
import json
import re
import sys

import numpy as np
import pydicom

uid_re = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def walk(d):
    for el in d:
        if el.VR == "SQ":
            for it in el.value:
                yield from walk(it)
        else:
            yield el


def check(seg_path, exp_path):
    def fail(msg):
        print("FAIL", seg_path, msg)
        sys.exit(1)

    exp = json.load(open(exp_path))
    ds = pydicom.dcmread(seg_path)

    if ds.SOPClassUID != "1.2.840.10008.5.1.4.1.1.66.4":
        fail("SOP class %s" % ds.SOPClassUID)
    if ds.SegmentationType != exp["type"]:
        fail("SegmentationType %s" % ds.SegmentationType)
    labels = [s.SegmentLabel for s in ds.SegmentSequence]
    if labels != exp["labels"]:
        fail("labels %r, want %r" % (labels, exp["labels"]))
    if [int(s.SegmentNumber) for s in ds.SegmentSequence] != list(range(1, len(labels) + 1)):
        fail("segment numbers not 1..n")
    if int(ds.NumberOfFrames) != len(exp["frames"]):
        fail("NumberOfFrames %s, want %d" % (ds.NumberOfFrames, len(exp["frames"])))
    if (ds.Rows, ds.Columns) != (exp["rows"], exp["cols"]):
        fail("size %dx%d" % (ds.Rows, ds.Columns))

    for uid in [ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.file_meta.MediaStorageSOPInstanceUID]:
        if len(uid) > 64 or not uid_re.match(uid):
            fail("bad UID %r" % uid)
    if ds.SOPInstanceUID != ds.file_meta.MediaStorageSOPInstanceUID:
        fail("meta SOP instance differs")


    for el in walk(ds):
        if el.VR == "DS":
            vals = el.value if el.VM > 1 else [el.value]
            for v in vals:
                if v is not None and len(str(v.original_string if hasattr(v, "original_string") else v)) > 16:
                    fail("DS longer than 16 characters in %s: %r" % (el.tag, v))

    arr = ds.pixel_array
    if arr.ndim == 2:
        arr = arr[None]
    rows, cols = exp["rows"], exp["cols"]
    for k, (f, fg) in enumerate(zip(exp["frames"], ds.PerFrameFunctionalGroupsSequence)):
        seg_no = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = fg.DerivationImageSequence[0].SourceImageSequence[0]
        if seg_no != f["segment"]:
            fail("frame %d segment %d, want %d" % (k + 1, seg_no, f["segment"]))
        if src.ReferencedSOPInstanceUID != f["sop"]:
            fail("frame %d references %s, want %s" % (k + 1, src.ReferencedSOPInstanceUID, f["sop"]))
        if int(src.get("ReferencedFrameNumber", 0) or 0) != f["frame"]:
            fail("frame %d referenced frame %r, want %d" % (k + 1, src.get("ReferencedFrameNumber"), f["frame"]))
        pos = [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient]
        if max(abs(a - b) for a, b in zip(pos, f["position"])) > 1e-6:
            fail("frame %d position %r, want %r" % (k + 1, pos, f["position"]))
        want = np.fromfile(f["mask"], dtype=np.uint8).reshape(rows, cols)
        if exp["type"] == "BINARY":
            want = (want != 0).astype(np.uint8)
        if not np.array_equal(arr[k].astype(np.uint8), want):
            diff = int((arr[k].astype(np.uint8) != want).sum())
            fail("frame %d: %d pixels differ from the mask written" % (k + 1, diff))
    print("OK", seg_path, len(exp["frames"]))


args = sys.argv[1:]
for i in range(0, len(args), 2):
    check(args[i], args[i + 1])
