package dicomio

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"dpersona/internal/testutil"
)

// TestOrthancAcceptsSEG sends the source CT and our SEGs (BINARY with the real LIDC reader
// outlines, FRACTIONAL consensus), an RT Structure Set of the same outlines and an IOCM rejection
// note (Key Object Selection) for one of the SEGs to a real Orthanc
// over C-STORE with dcmtk's storescu, and checks Orthanc stored them under the source study with
// the SOP class, modality and frames we wrote.
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
		path, sop, class, modality string
		frames                     int // SEG only
	}
	var segs []sent
	for _, c := range binaryAndFractionalCases("lidc-ct-0005", s, paths, masks, []string{"Nodule reader 1", "Nodule reader 2", "Nodule reader 3", "Nodule reader 4"}) {
		p := filepath.Join(dir, c.name+".dcm")
		info, err := WriteSEGFile(p, c.src, c.desc, c.masks)
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, sent{p, info.SOPInstanceUID, SegmentationStorage, "SEG", info.Frames})
	}
	rt := RTStructDescription{Equipment: testEquipment, StructureSetLabel: "DPERSONA", ROIs: roiDescs("GTVp_R1", "GTVp_R2", "GTVp_R3", "GTVp_R4")}
	data, rtInfo, err := EncodeRTStruct(s, rt, masks)
	if err != nil {
		t.Fatal(err)
	}
	rtPath := filepath.Join(dir, "rtstruct.dcm")
	if err := os.WriteFile(rtPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	segs = append(segs, sent{rtPath, rtInfo.SOPInstanceUID, RTStructureSetStorage, "RTSTRUCT", 0})
	// An IOCM rejection note for the first SEG, as a newer version would send.
	first, err := ReadSEG(segs[0].path)
	if err != nil {
		t.Fatal(err)
	}
	kosData, kosInfo, err := EncodeKOS(s, KOSDescription{Title: RejectedForQualityReasons, Equipment: testEquipment,
		References: []KOSReference{{first.SeriesInstanceUID, SegmentationStorage, first.SOPInstanceUID}}})
	if err != nil {
		t.Fatal(err)
	}
	kosPath := filepath.Join(dir, "kos.dcm")
	if err := os.WriteFile(kosPath, kosData, 0o644); err != nil {
		t.Fatal(err)
	}
	segs = append(segs, sent{kosPath, kosInfo.SOPInstanceUID, KeyObjectSelectionDocumentStorage, "KO", 0})

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
		id, ok := byUID[sg.sop]
		if !ok {
			t.Fatalf("%s %s not stored by Orthanc", sg.modality, sg.sop)
		}
		var tags map[string]any
		if err := pacs.GetJSON("/instances/"+id+"/simplified-tags", &tags); err != nil {
			t.Fatal(err)
		}
		if tags["SOPClassUID"] != sg.class || tags["Modality"] != sg.modality || sg.frames > 0 && tags["NumberOfFrames"] != fmt.Sprint(sg.frames) {
			t.Fatalf("Orthanc sees SOP class %v, modality %v, %v frames; wrote %s %s with %d frames", tags["SOPClassUID"], tags["Modality"], tags["NumberOfFrames"], sg.class, sg.modality, sg.frames)
		}
		if tags["StudyInstanceUID"] != s.StudyInstanceUID {
			t.Fatalf("%s filed under study %v, source study %s", sg.modality, tags["StudyInstanceUID"], s.StudyInstanceUID)
		}
	}
}
