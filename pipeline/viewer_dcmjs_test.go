package pipeline

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"dpersona/dicomio"
	"dpersona/internal/dicomstd"
	"dpersona/internal/testutil"
)

// dcmjsSEG is what testdata/viewer/check_seg.js reports for one SEG object.
type dcmjsSEG struct {
	Name             string `json:"name"`
	Error            string `json:"error"`
	Warnings         []string
	SegmentationType string `json:"segmentation_type"`
	Segments         []struct {
		Number      int       `json:"number"`
		Label       string    `json:"label"`
		TrackingID  string    `json:"tracking_id"`
		TrackingUID string    `json:"tracking_uid"`
		CIELab      []float64 `json:"cielab"`
		RGB         []int     `json:"rgb"`
	} `json:"segments"`
	AdapterSegments []int                       `json:"adapter_segments"`
	Labelmaps       int                         `json:"labelmaps"`
	Pixels          map[string]map[string][]int `json:"pixels"`
}

// TestDefaultOutputsLoadInDcmjs: the BINARY SEGs a lesion route sends by default (rater styles,
// samples, consensus) load in dcmjs the way OHIF loads them (its Cornerstone segmentation adapter
// against the referenced lidc-ct-0005 CT images): no error or warning, every segment with its
// label, tracking identifiers and colour (RecommendedDisplayCIELabValue through dcmjs's
// dicomlab2RGB gives back the colour we chose, within rounding), and the decoded labelmaps equal
// the masks we encoded, pixel for pixel on every CT image. Two lesions share each object, and the
// overlapping rater outlines make the adapter split them over several labelmaps. The FRACTIONAL
// probability SEG (opt-in) is the negative control: dcmjs refuses it, as OHIF users saw.
func TestDefaultOutputsLoadInDcmjs(t *testing.T) {
	viewer := filepath.Join(testutil.RepoRoot(), "testdata", "viewer")
	node := testutil.RequireNodePackage(t, viewer, "dcmjs")
	s, err := dicomio.LoadSeries(seriesFiles(t, testutil.Testdata("dicom", "lidc-ct-0005")))
	if err != nil {
		t.Fatal(err)
	}
	m := defaultManifest(t)
	S, R := m.Defaults.Samples, len(m.Raters)
	findings := []findingMaps{
		syntheticFinding(s, S, R, false),
		shiftedFinding(syntheticFinding(s, S, R, false), s.Rows, s.Cols, -110, -160, "Nodule 2"),
	}
	job := encodeJob{manifest: m, series: s, samples: S, threshold: m.Defaults.Threshold, lung: true}
	p := &Processor{SoftwareVersion: "test", DeviceSerialNumber: "test"}
	segOutputs := []Output{OutputRaters, OutputSamples, OutputConsensus}
	for _, o := range segOutputs {
		if !slices.Contains(LesionDefaultOutputs, o) {
			t.Fatalf("%s is no longer a default lesion output: update this test", o)
		}
	}
	objs, err := p.encodeOutputs(job, findings, append(append([]Output(nil), segOutputs...), OutputProbability))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	type segSpec struct {
		Name string `json:"name"`
		Path string `json:"path"`
	}
	spec := struct {
		CT   []string  `json:"ct"`
		Segs []segSpec `json:"segs"`
	}{}
	for _, sl := range s.Slices {
		spec.CT = append(spec.CT, sl.Path)
	}
	for _, o := range objs {
		path := filepath.Join(dir, string(o.Output)+".dcm")
		if err := os.WriteFile(path, o.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		spec.Segs = append(spec.Segs, segSpec{Name: string(o.Output), Path: path})
	}
	specPath, outPath := filepath.Join(dir, "spec.json"), filepath.Join(dir, "out.json")
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(specPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(viewer, "check_seg.js"), specPath, outPath)
	cmd.Dir = viewer
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("check_seg.js: %v\n%s", err, out)
	}
	var res struct {
		Dcmjs string     `json:"dcmjs"`
		Segs  []dcmjsSEG `json:"segs"`
	}
	raw, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	got := map[string]dcmjsSEG{}
	for _, r := range res.Segs {
		got[r.Name] = r
	}

	for _, o := range segOutputs {
		r := got[string(o)]
		if r.Error != "" || len(r.Warnings) > 0 {
			t.Errorf("%s: dcmjs %s did not load it cleanly: error %q, warnings %q", o, res.Dcmjs, r.Error, r.Warnings)
			continue
		}
		if r.SegmentationType != "BINARY" {
			t.Errorf("%s: SegmentationType %q", o, r.SegmentationType)
		}
		layers := job.layers(findings, o, false)
		if len(r.Segments) != len(layers) || len(r.AdapterSegments) != len(layers) {
			t.Errorf("%s: dcmjs sees %d segments (adapter %d), we encoded %d", o, len(r.Segments), len(r.AdapterSegments), len(layers))
			continue
		}
		for i, l := range layers {
			sg, f := r.Segments[i], l.finding.Finding
			where := string(o) + " segment " + strconv.Itoa(i+1)
			if sg.Number != i+1 || r.AdapterSegments[i] != i+1 {
				t.Errorf("%s: numbered %d (adapter %d)", where, sg.Number, r.AdapterSegments[i])
			}
			if want := f.Label + " - " + l.label; sg.Label != want {
				t.Errorf("%s: label %q, want %q", where, sg.Label, want)
			}
			if sg.TrackingID != f.TrackingID || sg.TrackingUID != f.TrackingUID {
				t.Errorf("%s: tracking %q/%q, want %q/%q", where, sg.TrackingID, sg.TrackingUID, f.TrackingID, f.TrackingUID)
			}
			if len(sg.RGB) != 3 {
				t.Errorf("%s: no RecommendedDisplayCIELabValue (%v)", where, sg.CIELab)
			} else {
				for c := range 3 {
					if d := sg.RGB[c] - int(l.color[c]); d < -1 || d > 1 {
						t.Errorf("%s: dcmjs shows colour %v (CIELab %v), we chose %v", where, sg.RGB, sg.CIELab, l.color)
						break
					}
				}
			}
			// The labelmap pixels of this segment, per CT image, against the mask we encoded.
			decoded := r.Pixels[strconv.Itoa(i+1)]
			total := 0
			for k, sl := range s.Slices {
				var want []int
				if mask := l.masks(k); mask != nil {
					for px, v := range mask {
						if v != 0 {
							want = append(want, px)
						}
					}
				}
				total += len(want)
				have := decoded[sl.SOPInstanceUID]
				if !slices.Equal(have, want) {
					t.Errorf("%s, CT image %d (%s): dcmjs decoded %d pixels, we encoded %d (first differing index %d)",
						where, k+1, sl.SOPInstanceUID, len(have), len(want), firstDiff(have, want))
				}
				delete(decoded, sl.SOPInstanceUID)
			}
			if total == 0 {
				t.Errorf("%s: the encoded mask is empty, nothing was checked", where)
			}
			for sop := range decoded {
				t.Errorf("%s: dcmjs placed pixels on %s, which is not a CT image of the series", where, sop)
			}
		}
		if o == OutputRaters && r.Labelmaps < 2 {
			t.Errorf("raters: the overlapping rater outlines came back in %d labelmap(s); the overlap path was not exercised", r.Labelmaps)
		}
	}
	for _, o := range segOutputs {
		r := got[string(o)]
		t.Logf("dcmjs %s: %s SEG, %d segments in %d labelmap(s)", res.Dcmjs, o, len(r.Segments), r.Labelmaps)
	}
	if r := got[string(OutputProbability)]; !strings.Contains(r.Error, "Fractional segmentations are not yet supported") {
		t.Errorf("the FRACTIONAL probability SEG: dcmjs said %q, expected its refusal (the check would not see a viewer failure)", r.Error)
	}
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// shiftedFinding is f moved by (dy, dx) pixels, as another lesion with its own tracking
// identifiers.
func shiftedFinding(f findingMaps, rows, cols, dy, dx int, label string) findingMaps {
	return findingMaps{Finding: &Finding{Label: label, TrackingID: label, TrackingUID: dicomstd.NewUID()},
		rater:  func(r, i int) []uint8 { return shiftMap(f.rater(r, i), rows, cols, dy, dx) },
		sample: func(j, i int) []uint8 { return shiftMap(f.sample(j, i), rows, cols, dy, dx) },
		mean:   func(i int) []float32 { return shiftMap(f.mean(i), rows, cols, dy, dx) },
	}
}

func shiftMap[T uint8 | float32](m []T, rows, cols, dy, dx int) []T {
	if m == nil {
		return nil
	}
	out := make([]T, len(m))
	for y := range rows {
		for x := range cols {
			if sy, sx := y-dy, x-dx; sy >= 0 && sy < rows && sx >= 0 && sx < cols {
				out[y*cols+x] = m[sy*cols+sx]
			}
		}
	}
	return out
}
