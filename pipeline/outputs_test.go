package pipeline

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"dpersona/dicomio"
	"dpersona/internal/dicomstd"
	"dpersona/internal/testutil"
)

// TestNewVersionSupersedes: a second version of the results lands in the same series of each
// output with InstanceNumber 2, its RT Structure Set names the first as predecessor, and a
// rejection note (IOCM KOS, DCM 113001) lists every object of the first version; dciodvfy
// accepts all of them.
func TestNewVersionSupersedes(t *testing.T) {
	p, job, f := nodulePatch(t, 4)
	job.lung = true
	outs := []Output{OutputRaters, OutputConsensus, OutputRTStruct}
	v1, err := p.encodeOutputs(job, []findingMaps{f}, outs)
	if err != nil {
		t.Fatal(err)
	}
	if len(v1) != len(outs) {
		t.Fatalf("version 1: %d objects, want %d (no rejection note without predecessors)", len(v1), len(outs))
	}
	job.enc.Version = 2
	job.enc.Predecessors = map[Output]Predecessor{}
	for _, o := range v1 {
		job.enc.Predecessors[o.Output] = Predecessor{SOPInstanceUID: o.SOPInstanceUID, SOPClassUID: o.SOPClassUID, SeriesInstanceUID: o.SeriesInstanceUID}
	}
	v2, err := p.encodeOutputs(job, []findingMaps{f}, outs)
	if err != nil {
		t.Fatal(err)
	}
	if len(v2) != len(outs)+1 || v2[len(outs)].Output != OutputRejectionNote || v2[len(outs)].Segments != len(v1) {
		t.Fatalf("version 2: %+v", v2)
	}
	dir := t.TempDir()
	vfy := testutil.RequireTool(t, "dciodvfy")
	for i, o := range v2 {
		path := filepath.Join(dir, string(o.Output)+".dcm")
		os.WriteFile(path, o.Data, 0o644)
		out, _ := exec.Command(vfy, path).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "Error") {
				t.Errorf("%s: dciodvfy: %s", o.Output, line)
			}
		}
		if i < len(outs) && (o.SeriesInstanceUID != v1[i].SeriesInstanceUID || o.SOPInstanceUID == v1[i].SOPInstanceUID) {
			t.Errorf("%s: version 2 in series %s (v1 %s), instance %s (v1 %s)", o.Output, o.SeriesInstanceUID, v1[i].SeriesInstanceUID, o.SOPInstanceUID, v1[i].SOPInstanceUID)
		}
		if o.Output == OutputRaters {
			seg, err := dicomio.ReadSEG(path)
			if err != nil {
				t.Fatal(err)
			}
			if seg.Segments[0].TrackingUID != f.Finding.TrackingUID {
				t.Errorf("tracking UID changed between versions")
			}
		}
		for _, want := range map[Output][]string{
			OutputRTStruct:      {"3006,0018", v1[2].SOPInstanceUID}, // PredecessorStructureSetSequence
			OutputRejectionNote: {v1[0].SOPInstanceUID, v1[1].SOPInstanceUID, v1[2].SOPInstanceUID, "113001"},
		}[o.Output] {
			dump, _ := exec.Command(testutil.RequireTool(t, "dcmdump"), "+L", path).CombinedOutput()
			if !strings.Contains(string(dump), want) {
				t.Errorf("%s does not hold %s", o.Output, want)
			}
		}
	}
}

// TestDeflatedOutputs: with Encoding.Deflate every object is in the deflated transfer syntax,
// far smaller, and reads back (our reader, pydicom via dcmdump's decoder) with the same frames;
// dicom3tools cannot read deflate, so dciodvfy checks the inflated file.
func TestDeflatedOutputs(t *testing.T) {
	p, job, f := nodulePatch(t, 4)
	outs := []Output{OutputSamples, OutputRTStruct}
	plain, err := p.encodeOutputs(job, []findingMaps{f}, outs)
	if err != nil {
		t.Fatal(err)
	}
	job.enc.Deflate = true
	deflated, err := p.encodeOutputs(job, []findingMaps{f}, outs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, o := range deflated {
		factor := 10 // BINARY frames: mostly zero bits
		if o.Output == OutputRTStruct {
			factor = 3 // decimal text
		}
		if len(o.Data)*factor > len(plain[i].Data) {
			t.Errorf("%s: deflated %d bytes, plain %d", o.Output, len(o.Data), len(plain[i].Data))
		}
		path := filepath.Join(dir, string(o.Output)+".dcm")
		os.WriteFile(path, o.Data, 0o644)
		dump, err := exec.Command(testutil.RequireTool(t, "dcmdump"), path).CombinedOutput()
		if err != nil || !strings.Contains(string(dump), "Deflated Explicit VR Little Endian") {
			t.Fatalf("%s: dcmdump: %v\n%.400s", o.Output, err, dump)
		}
		inflated, err := dicomstd.InflateFile(o.Data)
		if err != nil {
			t.Fatal(err)
		}
		ipath := filepath.Join(dir, string(o.Output)+"-inflated.dcm")
		os.WriteFile(ipath, inflated, 0o644)
		dciodvfyClean(t, ipath, string(o.Output))
		if o.Output != OutputSamples {
			continue
		}
		seg, err := dicomio.ReadSEG(path)
		if err != nil {
			t.Fatalf("ReadSEG of the deflated SEG: %v", err)
		}
		if len(seg.Frames) != o.Frames || o.Frames != plain[i].Frames {
			t.Fatalf("deflated SEG reads back %d frames, wrote %d (plain %d)", len(seg.Frames), o.Frames, plain[i].Frames)
		}
	}
}

// TestSegmentWordsAndColours: every segment of every SEG has a display colour (rater styles an
// ordered ramp, samples one family, the consensus its own), the series says it is AI output, and
// ContentDescription names the whole model version or falls back to a wording that fits, never
// cut in the middle.
func TestSegmentWordsAndColours(t *testing.T) {
	p, job, f := nodulePatch(t, 4)
	m := job.manifest
	outs := []Output{OutputRaters, OutputSamples, OutputConsensus, OutputBands}
	objs, err := p.encodeOutputs(job, []findingMaps{f}, outs)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	colours := map[string]Output{}
	for _, o := range objs {
		path := filepath.Join(dir, string(o.Output)+".dcm")
		os.WriteFile(path, o.Data, 0o644)
		dump, err := exec.Command(testutil.RequireTool(t, "dcmdump"), "+L", path).CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		var labs []string
		for _, l := range strings.Split(string(dump), "\n") {
			l = strings.TrimSpace(l)
			switch {
			case strings.HasPrefix(l, "(0062,000d)"):
				labs = append(labs, strings.Fields(l)[2])
			case strings.HasPrefix(l, "(0008,103e)"):
				if !strings.Contains(l, "[AI ") {
					t.Errorf("%s: SeriesDescription %s does not start with AI", o.Output, l)
				}
			case strings.HasPrefix(l, "(0070,0081)"):
				if !strings.Contains(l, m.Name+" "+m.Version) {
					t.Errorf("%s: ContentDescription %s does not name %s %s", o.Output, l, m.Name, m.Version)
				}
			}
		}
		if len(labs) != o.Segments {
			t.Fatalf("%s: %d colours for %d segments", o.Output, len(labs), o.Segments)
		}
		for _, c := range labs {
			if prev, dup := colours[c]; dup && (prev != o.Output || o.Output != OutputSamples && o.Output != OutputBands && o.Output != OutputRaters) {
				t.Errorf("%s reuses colour %s of %s", o.Output, c, prev)
			}
			colours[c] = o.Output
		}
	}
	// Rater styles from the smallest to the largest outline: a ramp getting darker.
	prev := 256.0
	for r := range m.Raters {
		c := rampColor(raterRamp, r, len(m.Raters))
		if l := 0.2126*float64(c[0]) + 0.7152*float64(c[1]) + 0.0722*float64(c[2]); l >= prev {
			t.Errorf("rater %d colour %v is not darker than rater %d's", r+1, c, r)
		} else {
			prev = l
		}
	}
	long := *m
	long.Name = strings.Repeat("very-long-model-name-", 3)
	if d := byModel("expert styles", &long); len(d) > 64 || d != "expert styles, model version "+m.Version {
		t.Errorf("ContentDescription for a long model name: %q", d)
	}
}
