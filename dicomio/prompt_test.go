package dicomio

import (
	"errors"
	"os"
	"strings"
	"testing"

	"dpersona/internal/testutil"
)

// The prompt fixtures (testdata/dicom/prompts, provenance in testdata/README.md) were written by
// real producers: pydicom (the shared length SRs, RTSTRUCT, GSPS, SR variants) and dcmjs's
// Cornerstone3D measurement-report adapter (the OHIF export path). The LIDC readers outlined the
// lidc-ct-0005 nodules at rows 401-412, columns 306-317 on the middle slices (sorted index 2-4)
// and rows 393-400, columns 122-129 on the two lowest slices (index 0-1); lidc-ct-0004's at
// rows 318-325, columns 136-144.

type wantLesion struct {
	item         string
	slice        int
	rowLo, rowHi int
	colLo, colHi int
	trackingID   string
	tracking     bool // a tracking UID is expected
	merged       int
}

type wantIssue struct {
	item string
	kind error
	text string // a fragment of the reason
}

func readPromptFixture(t *testing.T, name string) *PromptObject {
	t.Helper()
	obj, err := ReadPrompts(testutil.Testdata("dicom", "prompts", name))
	if err != nil {
		t.Fatalf("ReadPrompts(%s): %v", name, err)
	}
	return obj
}

func TestPromptsFromRealProducers(t *testing.T) {
	s4 := loadFixture(t, "lidc-ct-0004")
	s5 := loadFixture(t, "lidc-ct-0005")
	cases := []struct {
		file    string
		series  *Series
		source  PromptSource
		lesions []wantLesion
		issues  []wantIssue
	}{
		{"lidc-ct-0004-length-sr.dcm", s4, SourceSR,
			[]wantLesion{{item: "measurement group 1", slice: 2, rowLo: 318, rowHi: 325, colLo: 136, colHi: 144, trackingID: "Nodule 1", tracking: true}}, nil},
		{"lidc-ct-0005-length-sr.dcm", s5, SourceSR,
			[]wantLesion{{item: "measurement group 1", slice: 3, rowLo: 401, rowHi: 412, colLo: 306, colHi: 317, trackingID: "Nodule 1", tracking: true}}, nil},
		// dcmjs: Length, Bidirectional, EllipticalROI, ArrowAnnotate and Probe on one nodule: one
		// lesion, the four later groups merged into the first with a reason each.
		{"lidc-ct-0005-dcmjs-sr.dcm", s5, SourceSR,
			[]wantLesion{{item: "measurement group 1", slice: 3, rowLo: 401, rowHi: 412, colLo: 306, colHi: 317, trackingID: "Cornerstone3DTools@^0.1.0:Length", tracking: true, merged: 4}},
			[]wantIssue{
				{"measurement group 2", ErrPromptOverlap, "same lesion as SR measurement group 1"},
				{"measurement group 3", ErrPromptOverlap, "merged into it"},
				{"measurement group 4", ErrPromptOverlap, "merged into it"},
				{"measurement group 5", ErrPromptOverlap, "merged into it"},
			}},
		{"lidc-ct-0005-pydicom-sr-variants.dcm", s5, SourceSR,
			[]wantLesion{{item: "measurement group 2", slice: 1, rowLo: 393, rowHi: 400, colLo: 122, colHi: 129, trackingID: "Nodule 2", tracking: true}},
			[]wantIssue{
				{"measurement group 1", ErrPromptNoCoords, "no SCOORD or SCOORD3D"},
				{"measurement group 3", ErrPromptFrameOfRef, "no registration relates them"},
			}},
		{"lidc-ct-0005-pydicom-rtstruct.dcm", s5, SourceRTSTRUCT,
			[]wantLesion{{item: "ROI 1", slice: 3, rowLo: 401, rowHi: 412, colLo: 306, colHi: 317, merged: 1}},
			[]wantIssue{ // issues found while reading come before those found while placing
				{"ROI 5", ErrPromptUnsupported, "OPEN_PLANAR"},
				{"ROI 2", ErrPromptOverlap, "same lesion as RTSTRUCT ROI 1"},
				{"ROI 3", ErrPromptOutside, "from the nearest slice"},
				{"ROI 4", ErrPromptFrameOfRef, "frame of reference"},
			}},
		{"lidc-ct-0005-pydicom-gsps.dcm", s5, SourceGSPS,
			[]wantLesion{
				{item: "graphic object 1 of annotation 1", slice: 3, rowLo: 401, rowHi: 412, colLo: 306, colHi: 317, merged: 3},
				// DISPLAY units converted through the displayed area of slice 6.
				{item: "graphic object 1 of annotation 5", slice: 1, rowLo: 393, rowHi: 400, colLo: 122, colHi: 129},
			},
			[]wantIssue{
				{"graphic object 1 of annotation 2", ErrPromptOverlap, "merged"},
				{"graphic object 1 of annotation 3", ErrPromptOverlap, "merged"},
				{"graphic object 1 of annotation 4", ErrPromptOverlap, "merged"},
				{"graphic object 1 of annotation 6", ErrPromptOutside, "outside the 512 x 512 image"},
				{"graphic object 1 of annotation 7", ErrPromptReference, "is not in series"},
			}},
		{"lidc-ct-0005-pydicom-gsps-display-no-area.dcm", s5, SourceGSPS,
			[]wantLesion{{item: "graphic object 1 of annotation 2", slice: 4, rowLo: 401, rowHi: 412, colLo: 306, colHi: 317}},
			[]wantIssue{{"graphic object 1 of annotation 1", ErrPromptUnits, "no Displayed Area Selection applies"}}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			obj := readPromptFixture(t, c.file)
			if obj.Source != c.source {
				t.Errorf("source %s, want %s", obj.Source, c.source)
			}
			lesions, issues := c.series.ResolvePromptObject(obj)
			issues = append(obj.Issues, issues...)
			if len(lesions) != len(c.lesions) {
				t.Fatalf("%d lesions, want %d: %+v; issues %v", len(lesions), len(c.lesions), lesions, issues)
			}
			for i, w := range c.lesions {
				l := lesions[i]
				if l.Item != w.item || l.Slice != w.slice || l.Row < w.rowLo || l.Row > w.rowHi || l.Column < w.colLo || l.Column > w.colHi {
					t.Errorf("lesion %d: %s slice %d row %d column %d; want %s slice %d rows %d-%d columns %d-%d",
						i, l.Item, l.Slice, l.Row, l.Column, w.item, w.slice, w.rowLo, w.rowHi, w.colLo, w.colHi)
				}
				if l.TrackingID != w.trackingID || (l.TrackingUID != "") != w.tracking {
					t.Errorf("lesion %d: tracking %q / %q, want %q (UID %v)", i, l.TrackingID, l.TrackingUID, w.trackingID, w.tracking)
				}
				if len(l.Merged) != w.merged {
					t.Errorf("lesion %d: merged %v, want %d", i, l.Merged, w.merged)
				}
				if l.Source != c.source || l.ObjectUID != obj.SOPInstanceUID {
					t.Errorf("lesion %d: source %s object %s", i, l.Source, l.ObjectUID)
				}
			}
			if len(issues) != len(c.issues) {
				t.Fatalf("%d issues, want %d: %v", len(issues), len(c.issues), issues)
			}
			for i, w := range c.issues {
				is := issues[i]
				if is.Item != w.item || !errors.Is(is.Err, w.kind) || !strings.Contains(is.Error(), w.text) {
					t.Errorf("issue %d: %v; want %s, %v, containing %q", i, is, w.item, w.kind, w.text)
				}
			}
		})
	}
}

func TestPromptsFromAnotherStudy(t *testing.T) {
	s4 := loadFixture(t, "lidc-ct-0004")
	obj := readPromptFixture(t, "lidc-ct-0005-length-sr.dcm")
	lesions, issues := s4.ResolvePromptObject(obj)
	if len(lesions) != 0 || len(issues) != 1 || !errors.Is(issues[0].Err, ErrPromptStudy) || !strings.Contains(issues[0].Error(), s4.StudyInstanceUID) {
		t.Fatalf("lesions %v issues %v: want one ErrPromptStudy naming the series' study", lesions, issues)
	}
}

func TestPromptObjectRejectsImages(t *testing.T) {
	_, err := ReadPrompts(fixturePaths(t, "lidc-ct-0005")[0])
	if !errors.Is(err, ErrNotPromptObject) {
		t.Fatalf("ReadPrompts(CT image) = %v, want ErrNotPromptObject", err)
	}
	junk := t.TempDir() + "/junk.dcm"
	if err := os.WriteFile(junk, []byte("not dicom"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrompts(junk); !errors.Is(err, ErrNotDICOM) {
		t.Fatalf("ReadPrompts(junk) = %v, want ErrNotDICOM", err)
	}
}

func TestAPIPrompts(t *testing.T) {
	s := loadFixture(t, "lidc-ct-0005")
	mid := s.Slices[3]
	centre := s.PixelToPatient(3, 311.5, 406.5)
	lesions, issues := s.ResolvePrompts([]Prompt{
		PixelPrompt(mid.SOPInstanceUID, 0, 406, 311),
		PatientPrompt("", s.PixelToPatient(0, 125.5, 396.5)),
		PatientPrompt(s.FrameOfReferenceUID, Vec3{centre[0], centre[1], centre[2] + 200}),
		PixelPrompt(mid.SOPInstanceUID, 0, 512, 10),
		PixelPrompt("1.2.3.4", 0, 10, 10),
	})
	if len(lesions) != 2 || lesions[0].Slice != 3 || lesions[0].Row != 406 || lesions[0].Column != 311 ||
		lesions[1].Slice != 0 || lesions[1].Row != 396 || lesions[1].Column != 125 {
		t.Fatalf("lesions %+v", lesions)
	}
	if lesions[0].Center.sub(centre).norm() > 1e-6 {
		t.Errorf("centre %v, want %v", lesions[0].Center, centre)
	}
	want := []error{ErrPromptOutside, ErrPromptOutside, ErrPromptReference}
	if len(issues) != len(want) {
		t.Fatalf("issues %v", issues)
	}
	for i, k := range want {
		if !errors.Is(issues[i].Err, k) {
			t.Errorf("issue %d: %v, want %v", i, issues[i], k)
		}
	}
}

func TestParsePixelPrompt(t *testing.T) {
	p, err := ParsePixelPrompt("1.2.840.5:406,311")
	if err != nil || p.RefSOPInstanceUID != "1.2.840.5" || p.RefFrame != 0 || p.ImagePoints[0] != [2]float64{311.5, 406.5} || p.Source != SourceAPI {
		t.Fatalf("%+v, %v", p, err)
	}
	if p, err := ParsePixelPrompt("1.2.3/2:1,2"); err != nil || p.RefFrame != 2 {
		t.Fatalf("frame: %+v, %v", p, err)
	}
	for _, bad := range []string{"", "1.2.3", "1.2.3:1", "1.2.3:a,b", "1.2.3:-1,4", "x.y:1,2", "1.2/0:1,2", ":1,2"} {
		if _, err := ParsePixelPrompt(bad); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%q: %v, want ErrInvalidSpec", bad, err)
		}
	}
}
