"""Independent check of an RT Structure Set written by dicomio, with pydicom.

usage: verify_rtstruct.py RTSTRUCT IMAGE[,IMAGE...]

Checks the structure set against its source images: SOP class and modality, one ROI Contour
and one RT ROI Observations item per ROI, TG-263-style ROI names, the referenced frame of
reference and every source image in ReferencedFrameOfReferenceSequence, and for every
CLOSED_PLANAR contour: its image is a source image, NumberOfContourPoints matches ContourData,
and every point lies in that image's plane on a pixel corner. Prints "OK <n> contours" or
"FAIL <reason>" and exits 1.
"""
import re
import sys

import numpy as np
import pydicom


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


rs = pydicom.dcmread(sys.argv[1])
images = {}
for p in sys.argv[2].split(","):
    im = pydicom.dcmread(p, stop_before_pixels=True)
    images[im.SOPInstanceUID] = im

if rs.SOPClassUID != "1.2.840.10008.5.1.4.1.1.481.3" or rs.Modality != "RTSTRUCT":
    fail("SOP class %s modality %s" % (rs.SOPClassUID, rs.Modality))
first = next(iter(images.values()))
if rs.StudyInstanceUID != first.StudyInstanceUID or rs.PatientID != first.get("PatientID", ""):
    fail("study or patient not copied")
frs = rs.ReferencedFrameOfReferenceSequence
if len(frs) != 1 or frs[0].FrameOfReferenceUID != first.FrameOfReferenceUID:
    fail("ReferencedFrameOfReferenceSequence")
refd = {it.ReferencedSOPInstanceUID for st in frs[0].RTReferencedStudySequence
        for se in st.RTReferencedSeriesSequence for it in se.ContourImageSequence}
if refd != set(images):
    fail("ContourImageSequence lists %d of %d source images" % (len(refd & set(images)), len(images)))

rois = rs.StructureSetROISequence
numbers = [int(r.ROINumber) for r in rois]
for r in rois:
    if not re.fullmatch(r"[A-Za-z0-9_^]{1,16}", r.ROIName):
        fail("ROI name %r is not TG-263" % r.ROIName)
    if r.ReferencedFrameOfReferenceUID != first.FrameOfReferenceUID:
        fail("ROI %s frame of reference" % r.ROIName)
    if r.ROIGenerationAlgorithm not in ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"):
        fail("ROIGenerationAlgorithm %r" % r.ROIGenerationAlgorithm)
if sorted(int(c.ReferencedROINumber) for c in rs.ROIContourSequence) != sorted(numbers):
    fail("ROIContourSequence does not match the ROIs")
if sorted(int(o.ReferencedROINumber) for o in rs.RTROIObservationsSequence) != sorted(numbers):
    fail("RTROIObservationsSequence does not match the ROIs")

n = 0
for roic in rs.ROIContourSequence:
    if len(roic.ROIDisplayColor) != 3:
        fail("ROIDisplayColor")
    for c in roic.get("ContourSequence", []):
        if c.ContourGeometricType != "CLOSED_PLANAR":
            fail("geometric type %s" % c.ContourGeometricType)
        pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
        if len(pts) != int(c.NumberOfContourPoints) or len(pts) < 4:
            fail("NumberOfContourPoints %s for %d points" % (c.NumberOfContourPoints, len(pts)))
        uid = c.ContourImageSequence[0].ReferencedSOPInstanceUID
        if uid not in images:
            fail("contour on unknown image %s" % uid)
        im = images[uid]
        if "ImagePositionPatient" in im:
            o = np.array([float(v) for v in im.ImagePositionPatient])
            iop = np.array([float(v) for v in im.ImageOrientationPatient])
            row, col = iop[:3], iop[3:]
            normal = np.cross(row, col)
            dr, dc = (float(v) for v in im.PixelSpacing)
            d = pts - o
            if np.abs(d @ normal).max() > 1e-3:
                fail("contour %d off its image plane by %.4f mm" % (n + 1, np.abs(d @ normal).max()))
            cc, rr = d @ row / dc + 0.5, d @ col / dr + 0.5
            if np.abs(cc - np.round(cc)).max() > 1e-2 or np.abs(rr - np.round(rr)).max() > 1e-2:
                fail("contour %d has points off the pixel corners" % (n + 1))
            if cc.min() < -1e-2 or rr.min() < -1e-2 or cc.max() > im.Columns + 1e-2 or rr.max() > im.Rows + 1e-2:
                fail("contour %d leaves the image" % (n + 1))
        n += 1
print("OK %d contours" % n)
