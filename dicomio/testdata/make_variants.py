"""Write variants of a real CT series for dicomio's tests, with pydicom.

usage: make_variants.py SRC_DIR MR_DIR OUT_DIR

Good variants (each a folder of one series): other pixel formats and transfer syntaxes, and
enhanced multi-frame CT/MR built from the single-frame slices. Bad variants (folders named bad-*)
each break exactly one thing the loader must report.
"""
import copy
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid, ExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

src_dir, mr_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]


def load(d):
    dss = [pydicom.dcmread(os.path.join(d, f)) for f in sorted(os.listdir(d))]
    return [ds for ds in dss if "PixelData" in ds]


# Transfer syntax per SOP Instance UID where one slice of a variant differs from the rest.
ts_override = {}


def save(ds, folder, name, ts=ExplicitVRLittleEndian):
    ts = ts_override.get(ds.SOPInstanceUID, ts)
    os.makedirs(os.path.join(out, folder), exist_ok=True)
    ds.file_meta.TransferSyntaxUID = ts
    ds.is_little_endian = ts != ExplicitVRBigEndian
    ds.is_implicit_VR = ts == ImplicitVRLittleEndian
    ds.save_as(os.path.join(out, folder, name), write_like_original=False)


def variant(name, fn, ts=ExplicitVRLittleEndian):
    """Apply fn(ds, index) to a fresh copy of every source slice and save the series."""
    new_series = generate_uid()
    for i, ds in enumerate(load(src_dir)):
        ds = copy.deepcopy(ds)
        ds.SeriesInstanceUID = new_series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        fn(ds, i)
        save(ds, name, "%03d.dcm" % i, ts)


def stored(ds):
    return ds.pixel_array.astype(np.int64)


def set_pixels(ds, arr, bits_alloc, bits_stored, signed):
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_alloc, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dt = {(8, False): "<u1", (8, True): "<i1", (16, False): "<u2", (16, True): "<i2"}[(bits_alloc, signed)]
    ds.PixelData = arr.astype(dt).tobytes()
    ds["PixelData"].VR = "OB" if bits_alloc == 8 else "OW"


def u8(ds, i):
    a = stored(ds)
    set_pixels(ds, (a - a.min()) * 255 // max(1, a.max() - a.min()), 8, 8, False)
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"


def s8(ds, i):
    set_pixels(ds, np.clip(stored(ds) // 8, -128, 127), 8, 8, True)


def u16b12(ds, i):
    a = stored(ds)
    set_pixels(ds, np.clip(a - a.min(), 0, 4095), 16, 12, False)


def s16b12(ds, i):
    set_pixels(ds, np.clip(stored(ds), -2048, 2047), 16, 12, True)


def mono1(ds, i):
    ds.PhotometricInterpretation = "MONOCHROME1"


def rescale(ds, i):
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "10.25"


def bigendian(ds, i):
    a = ds.pixel_array
    ds.PixelData = a.astype(">i2").tobytes()


variant("u8", u8)
variant("s8", s8)
variant("u16b12", u16b12)
variant("s16b12", s16b12)
variant("mono1", mono1)
variant("rescale", rescale)
variant("implicit", lambda ds, i: None, ImplicitVRLittleEndian)
variant("bigendian", bigendian, ExplicitVRBigEndian)


def enhanced(slices, folder, sop_class, shuffle):
    """One enhanced multi-frame instance holding the slices in the order `shuffle`, with
    per-frame positions and per-frame rescale (each frame its own intercept)."""
    first = slices[0]
    ds = Dataset()
    ds.file_meta = copy.deepcopy(first.file_meta)
    for kw in ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID", "FrameOfReferenceUID",
               "Modality", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "PhotometricInterpretation", "SamplesPerPixel", "Manufacturer"]:
        if kw in first:
            setattr(ds, kw, getattr(first, kw))
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.NumberOfFrames = len(slices)
    shared = Dataset()
    po = Dataset(); po.ImageOrientationPatient = first.ImageOrientationPatient
    pm = Dataset(); pm.PixelSpacing = first.PixelSpacing; pm.SliceThickness = first.SliceThickness
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, pixels = [], []
    for k, idx in enumerate(shuffle):
        s = slices[idx]
        fg = Dataset()
        pp = Dataset(); pp.ImagePositionPatient = s.ImagePositionPatient
        fg.PlanePositionSequence = Sequence([pp])
        pv = Dataset()
        pv.RescaleSlope = "1"
        pv.RescaleIntercept = str(float(getattr(s, "RescaleIntercept", 0)) - 10 * k)
        pv.RescaleType = "HU" if ds.Modality == "CT" else "US"
        fg.PixelValueTransformationSequence = Sequence([pv])
        frames.append(fg)
        a = s.pixel_array.astype(np.int64) + 10 * k  # compensates the intercept: same modality values
        pixels.append(a)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    dt = "<i2" if ds.PixelRepresentation == 1 else "<u2"
    ds.PixelData = np.stack(pixels).astype(dt).tobytes()
    ds["PixelData"].VR = "OW"
    save(ds, folder, "enhanced.dcm")
    return ds


ct = load(src_dir)
enhanced(ct, "enhanced-ct", "1.2.840.10008.5.1.4.1.1.2.1", [3, 0, 4, 1, 2])
mr = sorted(load(mr_dir), key=lambda d: int(d.InstanceNumber))[:5]
enhanced(mr, "enhanced-mr", "1.2.840.10008.5.1.4.1.1.4.1", [4, 2, 0, 1, 3])

# Bad variants: one defect each.
def only(i0, fn):
    return lambda ds, i: fn(ds) if i == i0 else None

variant("bad-missing-position", only(2, lambda ds: delattr(ds, "ImagePositionPatient")))
variant("bad-orientation", only(3, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.8, 0.6])))
variant("bad-non-orthogonal", only(1, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0.5, 0.8660254, 0])))
variant("bad-spacing", only(4, lambda ds: setattr(ds, "PixelSpacing", [0.5, 0.5])))
variant("bad-duplicate-position", only(1, lambda ds: setattr(ds, "ImagePositionPatient", list(load(src_dir)[0].ImagePositionPatient))))
variant("bad-mixed-series", only(2, lambda ds: setattr(ds, "SeriesInstanceUID", generate_uid())))
variant("bad-frame-of-reference", only(0, lambda ds: setattr(ds, "FrameOfReferenceUID", generate_uid())))


def rows(ds):
    a = ds.pixel_array[:8]
    ds.Rows = 8
    ds.PixelData = a.astype("<i2").tobytes()


variant("bad-rows", only(3, rows))


def short_pixels(ds):
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]


variant("bad-short-pixeldata", only(1, short_pixels))


def rgb(ds):
    a = ds.pixel_array
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    set_pixels(ds, np.repeat((a & 0xFF)[..., None], 3, axis=2), 8, 8, False)


variant("bad-rgb", only(0, rgb))


def compressed(ds):
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ts_override[ds.SOPInstanceUID] = "1.2.840.10008.1.2.4.70"


# JPEG Lossless (Process 14, SV1): the fragments are not real JPEG, but the loader must refuse
# the transfer syntax before it looks at them.
variant("bad-compressed", only(2, compressed))

variant("bad-high-bit", only(0, lambda ds: setattr(ds, "HighBit", 11)))
variant("bad-bits-allocated", only(4, lambda ds: setattr(ds, "BitsAllocated", 12)))

# Enhanced CT whose NumberOfFrames disagrees with its per-frame functional groups.
bad_enh = enhanced(ct, "bad-enhanced-frame-count", "1.2.840.10008.5.1.4.1.1.2.1", [0, 1, 2, 3, 4])
bad_enh.NumberOfFrames = 4
save(bad_enh, "bad-enhanced-frame-count", "enhanced.dcm")
