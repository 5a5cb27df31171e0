package dicomio

import (
	"fmt"
	"math"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// RT Structure Set prompts (PS3.3 C.8.8.5, C.8.8.6, C.8.8.8).
//
// Each ROI is one lesion, in patient coordinates of the frame of reference its Structure Set ROI
// item names: a POINT contour is a seed; a CLOSED_PLANAR ROI (a rough GTV) is prompted at the
// centroid of its largest contour. Open contours and ROIs interpreted as anatomy or devices
// (EXTERNAL, ORGAN, AVOIDANCE, BOLUS, ...) do not mark a lesion and are reported.

// RT ROI Interpreted Types that do not mark a lesion.
var nonLesionROITypes = map[string]bool{
	"EXTERNAL": true, "ORGAN": true, "AVOIDANCE": true, "BOLUS": true, "SUPPORT": true,
	"FIXATION": true, "CAVITY": true, "CONTRAST_AGENT": true, "DOSE_REGION": true,
	"REGISTRATION": true, "ISOCENTER": true, "BRACHY_CHANNEL": true, "BRACHY_ACCESSORY": true,
	"BRACHY_SRC_APP": true, "BRACHY_CHNL_SHLD": true, "TREATED_VOLUME": true, "IRRAD_VOLUME": true,
	"DOSE_MEASUREMENT": true,
}

func readRTSTRUCTPrompts(a attrs, obj *PromptObject) {
	// The gateway's own rtstruct output, sent back by a PACS that forwards everything, is not a
	// radiologist's mark: taking it as a prompt would segment the gateway's output again.
	if a.str(tag.Manufacturer) == Manufacturer {
		obj.issue("", "", ErrPromptUnsupported, tagName(tag.Manufacturer), "%q: the structure set is this gateway's own output, not a prompt", Manufacturer)
		return
	}
	type roi struct{ name, forUID, kind string }
	rois := map[int]*roi{}
	for _, it := range a.items(tag.StructureSetROISequence) {
		n, err := it.requireInt(tag.ROINumber)
		if err != nil {
			continue
		}
		rois[n] = &roi{name: it.str(tag.ROIName), forUID: it.str(tag.ReferencedFrameOfReferenceUID)}
	}
	for _, it := range a.items(tag.RTROIObservationsSequence) {
		if n, err := it.requireInt(tag.ReferencedROINumber); err == nil && rois[n] != nil {
			rois[n].kind = it.str(tag.RTROIInterpretedType)
		}
	}
	contours := a.items(tag.ROIContourSequence)
	if len(contours) == 0 {
		obj.issue("", "", ErrPromptNoCoords, tagName(tag.ROIContourSequence), "the structure set holds no ROI contour")
		return
	}
	for _, rc := range contours {
		n, err := rc.requireInt(tag.ReferencedROINumber)
		if err != nil {
			obj.issue("ROI contour", "", ErrPromptNoCoords, tagName(tag.ReferencedROINumber), "absent")
			continue
		}
		item := fmt.Sprintf("ROI %d", n)
		r := rois[n]
		if r == nil {
			obj.issue(item, "", ErrPromptReference, tagName(tag.StructureSetROISequence), "no Structure Set ROI item for ROI number %d", n)
			continue
		}
		if nonLesionROITypes[r.kind] {
			obj.issue(item, r.name, ErrPromptUnsupported, tagName(tag.RTROIInterpretedType), "%s: the ROI outlines anatomy or equipment, not a lesion", r.kind)
			continue
		}
		if r.forUID == "" {
			obj.issue(item, r.name, ErrPromptFrameOfRef, tagName(tag.ReferencedFrameOfReferenceUID), "absent: the ROI's patient coordinates have no frame of reference")
			continue
		}
		var best []Vec3
		bestArea := -1.0
		shape := ""
		var reason *promptErr
		for ci, c := range rc.items(tag.ContourSequence) {
			kind := c.str(tag.ContourGeometricType)
			data, err := c.floats(tag.ContourData)
			pts, ok := triples(data)
			if err != nil || !ok {
				setFirst(&reason, perr(ErrPromptNoCoords, tagName(tag.ContourData), "contour %d: %d values, want (x, y, z) triples of finite numbers", ci+1, len(data)))
				continue
			}
			switch kind {
			case "POINT":
				if len(pts) != 1 {
					setFirst(&reason, perr(ErrPromptUnsupported, tagName(tag.ContourData), "contour %d: POINT with %d points", ci+1, len(pts)))
					continue
				}
				if best == nil {
					best, shape, bestArea = pts, "POINT", 0
				}
			case "CLOSED_PLANAR":
				if len(pts) < 3 {
					setFirst(&reason, perr(ErrPromptUnsupported, tagName(tag.ContourData), "contour %d: CLOSED_PLANAR with %d points", ci+1, len(pts)))
					continue
				}
				if ar := polygonArea3D(pts); ar > bestArea || shape == "POINT" {
					best, shape, bestArea = pts, "CLOSED_PLANAR", ar
				}
			default:
				setFirst(&reason, perr(ErrPromptUnsupported, tagName(tag.ContourGeometricType), "contour %d: %q does not mark a lesion (POINT or CLOSED_PLANAR needed)", ci+1, kind))
			}
		}
		if best == nil {
			if reason == nil {
				reason = perr(ErrPromptNoCoords, tagName(tag.ContourSequence), "the ROI has no contour")
			}
			obj.issue(item, r.name, reason.kind, reason.attribute, "%s", reason.detail)
			continue
		}
		obj.add(Prompt{Item: item, Label: r.name, Shape: shape, FrameOfReferenceUID: r.forUID, PatientPoints: best})
	}
}

// polygonArea3D is the area of a planar polygon in 3D (half the norm of the vector area).
func polygonArea3D(pts []Vec3) float64 {
	var s Vec3
	for i := range pts {
		c := cross(pts[i], pts[(i+1)%len(pts)])
		s = Vec3{s[0] + c[0], s[1] + c[1], s[2] + c[2]}
	}
	return 0.5 * math.Sqrt(s.dot(s))
}
