"""Independent check of an IOCM rejection note (Key Object Selection) written by dicomio.

usage: verify_kos.py KOS SOURCE_IMAGE UID[,UID...]

Checks with pydicom: KOS SOP class and modality KO, the study and patient of the source image,
the title DCM 113001 "Rejected for Quality Reasons", template DCMR 2010, and that the referenced
instances (content items and Current Requested Procedure Evidence) are exactly the given UIDs.
Prints "OK <n> references" or "FAIL <reason>" and exits 1.
"""
import sys

import pydicom


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


ko = pydicom.dcmread(sys.argv[1])
src = pydicom.dcmread(sys.argv[2], stop_before_pixels=True)
want = set(sys.argv[3].split(","))
if ko.SOPClassUID != "1.2.840.10008.5.1.4.1.1.88.59" or ko.Modality != "KO":
    fail("SOP class %s modality %s" % (ko.SOPClassUID, ko.Modality))
if ko.StudyInstanceUID != src.StudyInstanceUID or ko.get("PatientID") != src.get("PatientID"):
    fail("not in the source's study")
title = ko.ConceptNameCodeSequence[0]
if (title.CodeValue, title.CodingSchemeDesignator) != ("113001", "DCM"):
    fail("title %s %s" % (title.CodeValue, title.CodingSchemeDesignator))
tpl = ko.ContentTemplateSequence[0]
if (tpl.MappingResource, tpl.TemplateIdentifier) != ("DCMR", "2010") or ko.ValueType != "CONTAINER":
    fail("template %s %s" % (tpl.MappingResource, tpl.TemplateIdentifier))
content = set()
for it in ko.ContentSequence:
    if it.RelationshipType != "CONTAINS":
        fail("relationship %s" % it.RelationshipType)
    if it.ValueType in ("IMAGE", "COMPOSITE"):
        content.add(it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
evidence = set()
for st in ko.CurrentRequestedProcedureEvidenceSequence:
    if st.StudyInstanceUID != src.StudyInstanceUID:
        fail("evidence in study %s" % st.StudyInstanceUID)
    for se in st.ReferencedSeriesSequence:
        for r in se.ReferencedSOPSequence:
            evidence.add(r.ReferencedSOPInstanceUID)
if content != want or evidence != want:
    fail("content %d / evidence %d references, want %d" % (len(content), len(evidence), len(want)))
print("OK %d references" % len(want))
