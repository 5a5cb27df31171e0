"""Writes the RTSTRUCT and GSPS lesion-prompt fixtures under testdata/dicom/prompts/ with pydicom.

Run once with Debian's interpreter (python3-pydicom):  /usr/bin/python3 make_pydicom_prompts.py
The outputs are committed; this script is their provenance. The CT they reference is
testdata/dicom/lidc-ct-0005 (LIDC-IDRI, CC BY 3.0); the nodule positions come from the LIDC
readers' outlines in its reader_masks.npz (slices 3 and 4: rows 401-412, columns 306-317).

Each object holds valid prompts next to deliberately bad ones, so a reader must report the bad
ones with a reason and still keep the valid ones:
  RTSTRUCT: POINT seed and CLOSED_PLANAR contour on the nodule (valid); a POINT 50 mm above the
            volume (outside the series); a ROI whose frame of reference is another one; an OPEN
            contour (not a lesion outline).
  GSPS:     POINT, CIRCLE, ELLIPSE and POLYLINE in PIXEL units (valid); a POINT in DISPLAY units on
            an image with a displayed area (valid, converted); a POINT outside the image; a POINT
            on an image that is not in the study.
  GSPS (display-units-no-area): a POINT in DISPLAY units on an image for which the object holds
            no displayed area, so it cannot be converted to pixels.
"""
import datetime
import glob
import os

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
CT = os.path.join(HERE, "..", "dicom", "lidc-ct-0005")
OUT = os.path.join(HERE, "..", "dicom", "prompts")
# Fixed UIDs (derived from names) so that re-running gives the same objects.
ROOT = "1.2.826.0.1.3680043.8.498."
def uid(name):
    return generate_uid(prefix=ROOT, entropy_srcs=["dpersona-prompt-fixtures", name])

RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
NOW = datetime.datetime(2026, 11, 29, 12, 0, 0)

cts = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in glob.glob(os.path.join(CT, "*.dcm"))), key=lambda d: d.InstanceNumber)
ref = cts[0]
by_instance = {int(d.InstanceNumber): d for d in cts}


def base(sop_class, modality, series_no, name):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid(name + "-sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        setattr(ds, k, getattr(ref, k, ""))
    ds.Modality = modality
    ds.SeriesInstanceUID = uid(name + "-series")
    ds.SeriesNumber = series_no
    ds.InstanceNumber = 1
    ds.Manufacturer = "pydicom " + pydicom.__version__
    ds.ContentDate = NOW.strftime("%Y%m%d")
    ds.ContentTime = NOW.strftime("%H%M%S")
    return ds


def patient_point(d, col, row):
    """Centre of pixel (col, row) of image d in patient mm (PS3.3 C.7.6.2.1.1)."""
    o = np.array([float(v) for v in d.ImagePositionPatient])
    iop = [float(v) for v in d.ImageOrientationPatient]
    r, c = np.array(iop[:3]), np.array(iop[3:])
    dr, dc = (float(v) for v in d.PixelSpacing)
    return o + col * dc * r + row * dr * c


def fmt(v):
    return [f"{x:.4f}".rstrip("0").rstrip(".") for x in v]


def write(ds, name):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    ds.save_as(path, write_like_original=False)
    print("wrote", path)


def rtstruct():
    ds = base(RTSTRUCT_CLASS, "RTSTRUCT", 800, "rtstruct")
    ds.SeriesDescription = "pydicom RTSTRUCT"
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = ref.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "NODULE"
    ds.StructureSetName = "nodule prompts"
    ds.StructureSetDate = ds.ContentDate
    ds.StructureSetTime = ds.ContentTime
    contour_images = Sequence()
    for d in cts:
        it = Dataset()
        it.ReferencedSOPClassUID = d.SOPClassUID
        it.ReferencedSOPInstanceUID = d.SOPInstanceUID
        contour_images.append(it)
    series = Dataset(); series.SeriesInstanceUID = ref.SeriesInstanceUID; series.ContourImageSequence = contour_images
    study = Dataset(); study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"; study.ReferencedSOPInstanceUID = ref.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    for_ = Dataset(); for_.FrameOfReferenceUID = ref.FrameOfReferenceUID; for_.RTReferencedStudySequence = Sequence([study])
    other_for = Dataset(); other_for.FrameOfReferenceUID = uid("other-frame-of-reference")
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_, other_for])

    s3, s4 = by_instance[3], by_instance[4]
    centre4 = patient_point(s4, 311.5, 406.5)
    above = centre4 + np.array([0, 0, 50.0])  # 50 mm beyond the top slice (-120 mm)
    # A 12-gon around the nodule on slice 3 (centre column 312, row 405.5, radius 6 px).
    ring = [patient_point(s3, 312 + 6 * np.cos(a), 405.5 + 6 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
    open_line = [patient_point(s4, 300, 400), patient_point(s4, 320, 410)]
    rois = [
        # number, name, frame of reference, interpreted type, [(geometric type, points, image)]
        (1, "Nodule seed", ref.FrameOfReferenceUID, "MARKER", [("POINT", [centre4], s4)]),
        (2, "GTV nodule", ref.FrameOfReferenceUID, "GTV", [("CLOSED_PLANAR", ring, s3)]),
        (3, "Seed above volume", ref.FrameOfReferenceUID, "MARKER", [("POINT", [above], None)]),
        (4, "Seed other frame", other_for.FrameOfReferenceUID, "MARKER", [("POINT", [centre4], None)]),
        (5, "Open line", ref.FrameOfReferenceUID, "CONTROL", [("OPEN_PLANAR", open_line, s4)]),
    ]
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for n, name, forUID, kind, contours in rois:
        r = Dataset(); r.ROINumber = n; r.ReferencedFrameOfReferenceUID = forUID; r.ROIName = name; r.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(r)
        rc = Dataset(); rc.ReferencedROINumber = n; rc.ROIDisplayColor = [255, 0, 0]
        rc.ContourSequence = Sequence()
        for k, (gtype, pts, img) in enumerate(contours):
            c = Dataset()
            c.ContourNumber = k + 1
            c.ContourGeometricType = gtype
            c.NumberOfContourPoints = len(pts)
            c.ContourData = fmt(np.concatenate(pts))
            if img is not None:
                ci = Dataset(); ci.ReferencedSOPClassUID = img.SOPClassUID; ci.ReferencedSOPInstanceUID = img.SOPInstanceUID
                c.ContourImageSequence = Sequence([ci])
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
        ob = Dataset(); ob.ObservationNumber = n; ob.ReferencedROINumber = n; ob.RTROIInterpretedType = kind; ob.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(ob)
    ds.ApprovalStatus = "UNAPPROVED"
    write(ds, "lidc-ct-0005-pydicom-rtstruct.dcm")


def gsps(name, objects, areas):
    """objects: [(image, units, type, points, filled)]; areas: [(images, tlhc, brhc)] (1-based pixels)."""
    ds = base(GSPS_CLASS, "PR", 801, name)
    ds.SeriesDescription = "pydicom GSPS"
    ds.Laterality = ""
    ds.ContentLabel = "NODULE"
    ds.ContentDescription = "nodule annotations"
    ds.PresentationCreationDate = ds.ContentDate
    ds.PresentationCreationTime = ds.ContentTime
    ds.ContentCreatorName = ""
    images = []
    for img, *_ in objects:
        if img.SOPInstanceUID not in [i.SOPInstanceUID for i in images]:
            images.append(img)
    def refs(imgs):
        out = Sequence()
        for d in imgs:
            it = Dataset(); it.ReferencedSOPClassUID = d.SOPClassUID; it.ReferencedSOPInstanceUID = d.SOPInstanceUID
            out.append(it)
        return out
    rs = Dataset(); rs.SeriesInstanceUID = ref.SeriesInstanceUID; rs.ReferencedImageSequence = refs([i for i in images if i.SeriesInstanceUID == ref.SeriesInstanceUID])
    ds.ReferencedSeriesSequence = Sequence([rs])
    layer = Dataset(); layer.GraphicLayer = "NODULE"; layer.GraphicLayerOrder = 1; layer.GraphicLayerDescription = "nodule marks"
    ds.GraphicLayerSequence = Sequence([layer])
    ds.GraphicAnnotationSequence = Sequence()
    for img, units, gtype, pts, filled in objects:
        ann = Dataset()
        ann.ReferencedImageSequence = refs([img])
        ann.GraphicLayer = "NODULE"
        g = Dataset()
        g.GraphicAnnotationUnits = units
        g.GraphicDimensions = 2
        g.NumberOfGraphicPoints = len(pts)
        g.GraphicData = [float(v) for p in pts for v in p]
        g.GraphicType = gtype
        g.GraphicFilled = "Y" if filled else "N"
        ann.GraphicObjectSequence = Sequence([g])
        ds.GraphicAnnotationSequence.append(ann)
    ds.DisplayedAreaSelectionSequence = Sequence()
    for imgs, tlhc, brhc in areas:
        a = Dataset()
        a.ReferencedImageSequence = refs(imgs)
        a.DisplayedAreaTopLeftHandCorner = list(tlhc)
        a.DisplayedAreaBottomRightHandCorner = list(brhc)
        a.PresentationSizeMode = "SCALE TO FIT"
        a.PresentationPixelSpacing = [float(v) for v in ref.PixelSpacing]
        ds.DisplayedAreaSelectionSequence.append(a)
    ds.ImageRotation = 0
    ds.ImageHorizontalFlip = "N"
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept = ref.RescaleIntercept
    ds.RescaleSlope = ref.RescaleSlope
    ds.RescaleType = "HU"
    ds.SoftcopyVOILUTSequence = Sequence()
    voi = Dataset(); voi.ReferencedImageSequence = refs(images); voi.WindowCenter = -600; voi.WindowWidth = 1500
    ds.SoftcopyVOILUTSequence.append(voi)
    return ds


def gsps_fixtures():
    s3, s4, s6 = by_instance[3], by_instance[4], by_instance[6]
    # An image that is in no study we have: a copy of slice 4's header with new UIDs.
    stranger = Dataset(); stranger.SOPClassUID = s4.SOPClassUID; stranger.SOPInstanceUID = uid("not-in-study-image"); stranger.SeriesInstanceUID = ref.SeriesInstanceUID
    objects = [
        (s4, "PIXEL", "POINT", [(312.0, 406.5)], False),
        (s3, "PIXEL", "CIRCLE", [(312.0, 405.5), (318.0, 405.5)], False),
        (s4, "PIXEL", "ELLIPSE", [(306.0, 406.5), (318.0, 406.5), (312.0, 401.0), (312.0, 412.0)], False),
        (s3, "PIXEL", "POLYLINE", [(307.0, 401.0), (317.0, 401.0), (317.0, 410.0), (307.0, 410.0), (307.0, 401.0)], False),
        # DISPLAY units on slice 6, whose displayed area is columns 1..256, rows 257..512 (1-based):
        # (0.5, 0.55) is column 128, row 256 + 140.8 -> the slice-6 nodule (rows 393-400, cols 122-129).
        (s6, "DISPLAY", "POINT", [(0.490234375, 0.5478515625)], False),
        (s4, "PIXEL", "POINT", [(600.0, 20.0)], False),
        (stranger, "PIXEL", "POINT", [(312.0, 406.0)], False),
    ]
    areas = [([s3, s4], (1, 1), (512, 512)), ([s6], (1, 257), (256, 512))]
    write(gsps("gsps", objects, areas), "lidc-ct-0005-pydicom-gsps.dcm")
    bad = [(s4, "DISPLAY", "POINT", [(0.6, 0.79)], False), (s3, "PIXEL", "POINT", [(312.0, 405.5)], False)]
    write(gsps("gsps-display-no-area", bad, [([s3], (1, 1), (512, 512))]), "lidc-ct-0005-pydicom-gsps-display-no-area.dcm")


rtstruct()
gsps_fixtures()


def sr_variants():
    """A Comprehensive 3D SR made from the shared length SR of lidc-ct-0005 (pydicom, TID 1500): a report whose first
    measurement group lost its SCOORD (a measurement without coordinates: reported) and whose
    second group locates another nodule with an SCOORD3D POINT in patient mm (valid), plus a third
    group with an SCOORD3D in another frame of reference (reported)."""
    import copy
    src = pydicom.dcmread(os.path.join(OUT, "lidc-ct-0005-length-sr.dcm"))
    ds = copy.deepcopy(src)
    # SCOORD3D needs the Comprehensive 3D SR IOD.
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = uid("sr-variants-sop")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = uid("sr-variants-series")
    ds.SeriesDescription = "Measurements (variants)"
    measurements = ds.ContentSequence[4]
    g1 = measurements.ContentSequence[0]
    num = g1.ContentSequence[3]
    del num.ContentSequence  # the length no longer says where it was measured
    s6 = by_instance[6]
    def group(tracking, point, for_uid):
        g = copy.deepcopy(g1)
        g.ContentSequence[0].TextValue = tracking
        g.ContentSequence[1].UID = uid("tracking-" + tracking)
        center = Dataset()
        center.RelationshipType = "CONTAINS"
        center.ValueType = "SCOORD3D"
        name = Dataset(); name.CodeValue = "111010"; name.CodingSchemeDesignator = "DCM"; name.CodeMeaning = "Center"
        center.ConceptNameCodeSequence = Sequence([name])
        center.GraphicType = "POINT"
        center.GraphicData = [float(v) for v in point]
        center.ReferencedFrameOfReferenceUID = for_uid
        g.ContentSequence[3] = center
        return g
    # The slice-6 nodule (rows 393-400, columns 122-129).
    p6 = patient_point(s6, 125.5, 396.5)
    measurements.ContentSequence.append(group("Nodule 2", p6, ref.FrameOfReferenceUID))
    measurements.ContentSequence.append(group("Nodule 3", p6, uid("other-frame-of-reference")))
    write(ds, "lidc-ct-0005-pydicom-sr-variants.dcm")


sr_variants()
