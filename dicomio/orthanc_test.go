package dicomio

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"dpersona/internal/testutil"
)

// TestOrthancAcceptsSEG sends the source CT and our SEGs (BINARY with the real LIDC reader
// outlines, FRACTIONAL consensus) to a real Orthanc over C-STORE with dcmtk's storescu, and checks
// Orthanc stored them as Segmentation Storage with the frames we wrote.
func TestOrthancAcceptsSEG(t *testing.T) {
	storescu := testutil.RequireTool(t, "storescu")
	paths := fixturePaths(t, "lidc-ct-0005")
	s, err := LoadSeries(paths)
	if err != nil {
		t.Fatal(err)
	}
	masks := lidcReaderMasks(t, "lidc-ct-0005", s)
	dir := t.TempDir()
	type sent struct {
		path string
		info *SEGInfo
	}
	var segs []sent
	for _, c := range binaryAndFractionalCases("lidc-ct-0005", s, paths, masks, []string{"Nodule reader 1", "Nodule reader 2", "Nodule reader 3", "Nodule reader 4"}) {
		p := filepath.Join(dir, c.name+".dcm")
		info, err := WriteSEGFile(p, c.src, c.desc, c.masks)
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, sent{p, info})
	}

	pacs := testutil.StartOrthanc(t, testutil.OrthancOptions{AET: "PACS"})
	args := []string{"-aet", "DPERSONA", "-aec", pacs.AET, "-R", "127.0.0.1", strconv.Itoa(pacs.DICOMPort)}
	args = append(args, paths...)
	for _, sg := range segs {
		args = append(args, sg.path)
	}
	if out, err := exec.Command(storescu, args...).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	var instances []struct {
		ID            string
		MainDicomTags map[string]string
	}
	if err := pacs.GetJSON("/instances?expand", &instances); err != nil {
		t.Fatal(err)
	}
	if len(instances) != len(paths)+len(segs) {
		t.Fatalf("Orthanc holds %d instances, sent %d", len(instances), len(paths)+len(segs))
	}
	byUID := map[string]string{}
	for _, in := range instances {
		byUID[in.MainDicomTags["SOPInstanceUID"]] = in.ID
	}
	for _, sg := range segs {
		id, ok := byUID[sg.info.SOPInstanceUID]
		if !ok {
			t.Fatalf("SEG %s not stored by Orthanc", sg.info.SOPInstanceUID)
		}
		var tags map[string]any
		if err := pacs.GetJSON("/instances/"+id+"/simplified-tags", &tags); err != nil {
			t.Fatal(err)
		}
		if tags["SOPClassUID"] != SegmentationStorage || tags["Modality"] != "SEG" || tags["NumberOfFrames"] != fmt.Sprint(sg.info.Frames) {
			t.Fatalf("Orthanc sees SOP class %v, modality %v, %v frames; wrote %d frames", tags["SOPClassUID"], tags["Modality"], tags["NumberOfFrames"], sg.info.Frames)
		}
		if tags["StudyInstanceUID"] != s.StudyInstanceUID {
			t.Fatalf("SEG filed under study %v, source study %s", tags["StudyInstanceUID"], s.StudyInstanceUID)
		}
	}
}
