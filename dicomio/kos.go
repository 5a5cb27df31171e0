package dicomio

import (
	"fmt"
	"strconv"
	"time"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// The Key Object Selection Document IOD (PS3.3 A.35.4) as IHE IOCM uses it for rejection notes:
// a KO document titled "Rejected for Quality Reasons" (DCM 113001) that lists the instances a
// newer version replaces, so archives and viewers that implement IOCM hide them. Modules: Patient
// and Study copied from the source series, Key Object Document Series, General Equipment, Key
// Object Document (with the Current Requested Procedure Evidence Sequence), SR Document Content
// (TID 2010 Key Object Selection: title, optional description, one IMAGE or COMPOSITE item per
// instance) and SOP Common.

// KeyObjectSelectionDocumentStorage is the SOP Class UID of KOS documents.
const KeyObjectSelectionDocumentStorage = "1.2.840.10008.5.1.4.1.1.88.59"

// RejectedForQualityReasons is the IOCM rejection note title (CID 7011).
var RejectedForQualityReasons = Code{Scheme: "DCM", Code: "113001", Meaning: "Rejected for Quality Reasons"}

var keyObjectDescription = Code{Scheme: "DCM", Code: "113012", Meaning: "Key Object Description"}

// imageStorageClasses are the SOP classes a KOS references as IMAGE (others as COMPOSITE).
var imageStorageClasses = map[string]bool{SegmentationStorage: true}

// KOSReference is one instance a KOS selects.
type KOSReference struct {
	SeriesInstanceUID string
	SOPClassUID       string
	SOPInstanceUID    string
}

// KOSDescription describes a Key Object Selection document about instances of src's study.
type KOSDescription struct {
	Title       Code   // document title, e.g. RejectedForQualityReasons
	Description string // Key Object Description (TEXT), optional, plain words
	References  []KOSReference
	// SeriesInstanceUID (empty: a new UID), SeriesNumber (default 1), InstanceNumber (default 1).
	SeriesInstanceUID string
	SOPInstanceUID    string // empty: a new UID
	SeriesNumber      int
	InstanceNumber    int
	SeriesDescription string
	Equipment         Equipment
	ContentTime       time.Time // zero: now
}

// KOSInfo reports what EncodeKOS wrote.
type KOSInfo struct {
	SOPInstanceUID    string
	SeriesInstanceUID string
	References        int
	Size              int
}

// EncodeKOS builds a Key Object Selection Document Part-10 file in src's study (patient and
// study attributes copied from src). The referenced instances must belong to that study.
func EncodeKOS(src *Series, desc KOSDescription) ([]byte, *KOSInfo, error) {
	if err := desc.validate(src); err != nil {
		return nil, nil, err
	}
	now := fillIdentity(desc.ContentTime, &desc.SOPInstanceUID, &desc.SeriesInstanceUID)

	var ds []element
	ds = append(ds, src.patientStudy...)
	ds = append(ds, seriesModule("KO", desc.SeriesInstanceUID, max(desc.SeriesNumber, 1), desc.SeriesDescription, now)...)
	ds = append(ds, attrSeq(tag.ReferencedPerformedProcedureStepSequence)) // Type 2
	ds = append(ds, desc.Equipment.module()...)
	ds = append(ds, desc.keyObjectDocumentModule(src, now)...)
	ds = append(ds, desc.contentModule()...)
	ds = append(ds, sopCommonModule(KeyObjectSelectionDocumentStorage, desc.SOPInstanceUID, now)...)
	ds = withCharacterSet(ds)
	data := encodePart10(KeyObjectSelectionDocumentStorage, desc.SOPInstanceUID, ds)
	return data, &KOSInfo{SOPInstanceUID: desc.SOPInstanceUID, SeriesInstanceUID: desc.SeriesInstanceUID,
		References: len(desc.References), Size: len(data)}, nil
}

// keyObjectDocumentModule: instance number, content date and time, and the evidence: every
// referenced instance by series (Hierarchical SOP Instance Reference Macro).
func (d *KOSDescription) keyObjectDocumentModule(src *Series, now time.Time) []element {
	var seriesOrder []string
	bySeries := map[string][][]element{}
	for _, r := range d.References {
		if _, ok := bySeries[r.SeriesInstanceUID]; !ok {
			seriesOrder = append(seriesOrder, r.SeriesInstanceUID)
		}
		bySeries[r.SeriesInstanceUID] = append(bySeries[r.SeriesInstanceUID],
			[]element{attr(tag.ReferencedSOPClassUID, r.SOPClassUID), attr(tag.ReferencedSOPInstanceUID, r.SOPInstanceUID)})
	}
	series := make([][]element, len(seriesOrder))
	for i, uid := range seriesOrder {
		series[i] = []element{attr(tag.SeriesInstanceUID, uid), attrSeq(tag.ReferencedSOPSequence, bySeries[uid]...)}
	}
	return []element{
		attr(tag.InstanceNumber, strconv.Itoa(max(d.InstanceNumber, 1))),
		attr(tag.ContentDate, dicomDate(now)),
		attr(tag.ContentTime, dicomTime(now)),
		attrSeq(tag.CurrentRequestedProcedureEvidenceSequence, []element{
			attr(tag.StudyInstanceUID, src.StudyInstanceUID),
			attrSeq(tag.ReferencedSeriesSequence, series...),
		}),
	}
}

// contentModule is the SR Document Content of TID 2010: the titled root container holding the
// description and one item per referenced instance.
func (d *KOSDescription) contentModule() []element {
	var items [][]element
	if d.Description != "" {
		items = append(items, []element{
			attr(tag.RelationshipType, "CONTAINS"),
			attr(tag.ValueType, "TEXT"),
			attrSeq(tag.ConceptNameCodeSequence, codeItem(keyObjectDescription)),
			attr(tag.TextValue, d.Description),
		})
	}
	for _, r := range d.References {
		vt := "COMPOSITE"
		if imageStorageClasses[r.SOPClassUID] {
			vt = "IMAGE"
		}
		items = append(items, []element{
			attr(tag.RelationshipType, "CONTAINS"),
			attr(tag.ValueType, vt),
			attrSeq(tag.ReferencedSOPSequence, []element{attr(tag.ReferencedSOPClassUID, r.SOPClassUID), attr(tag.ReferencedSOPInstanceUID, r.SOPInstanceUID)}),
		})
	}
	return []element{
		attr(tag.ValueType, "CONTAINER"),
		attrSeq(tag.ConceptNameCodeSequence, codeItem(d.Title)),
		attr(tag.ContinuityOfContent, "SEPARATE"),
		attrSeq(tag.ContentTemplateSequence, []element{attr(tag.MappingResource, "DCMR"), attr(tag.TemplateIdentifier, "2010")}),
		attrSeq(tag.ContentSequence, items...),
	}
}

func (d *KOSDescription) validate(src *Series) error {
	bad := func(attr, format string, args ...any) error { return newErr(ErrInvalidKOS, "", attr, format, args...) }
	if err := checkSource(ErrInvalidKOS, src); err != nil {
		return err
	}
	if err := checkCodeKind(ErrInvalidKOS, d.Title, "ConceptNameCodeSequence (0040,A043) document title"); err != nil {
		return err
	}
	if len(d.References) == 0 {
		return bad("ContentSequence (0040,A730)", "no instances to reference")
	}
	if len(d.Description) > 1024 {
		return bad("TextValue (0040,A160) Key Object Description", "longer than 1024 characters")
	}
	if err := checkLOKind(ErrInvalidKOS, d.SeriesDescription, "SeriesDescription (0008,103E)", false); err != nil {
		return err
	}
	if err := d.Equipment.validate(ErrInvalidKOS); err != nil {
		return err
	}
	if err := checkIdentityUIDs(ErrInvalidKOS, d.SOPInstanceUID, d.SeriesInstanceUID); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, r := range d.References {
		where := fmt.Sprintf("reference %d", i+1)
		for _, u := range []struct{ name, v string }{
			{where + " SeriesInstanceUID (0020,000E)", r.SeriesInstanceUID}, {where + " ReferencedSOPClassUID (0008,1150)", r.SOPClassUID},
			{where + " ReferencedSOPInstanceUID (0008,1155)", r.SOPInstanceUID},
		} {
			if err := checkUID(ErrInvalidKOS, u.v, u.name, true); err != nil {
				return err
			}
		}
		if seen[r.SOPInstanceUID] {
			return bad(where+" ReferencedSOPInstanceUID (0008,1155)", "%s is listed twice", r.SOPInstanceUID)
		}
		seen[r.SOPInstanceUID] = true
	}
	return nil
}
