package dicomio

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dpersona/internal/dicomstd"
)

// A rejection note for a superseded SEG and RTSTRUCT of the LIDC series: dciodvfy finds no
// error, pydicom reads the IOCM structure back (title DCM 113001, TID 2010, evidence by series).
func TestKOSRejectionNote(t *testing.T) {
	paths := fixturePaths(t, "lidc-ct-0004")
	s := loadFixture(t, "lidc-ct-0004")
	segSeries, rtSeries := dicomstd.NewUID(), dicomstd.NewUID()
	refs := []KOSReference{
		{segSeries, SegmentationStorage, dicomstd.NewUID()},
		{segSeries, SegmentationStorage, dicomstd.NewUID()},
		{rtSeries, RTStructureSetStorage, dicomstd.NewUID()},
	}
	desc := KOSDescription{Title: RejectedForQualityReasons, Description: "Replaced by a newer version of the AI results",
		References: refs, Equipment: testEquipment, SeriesDescription: "AI results replaced", SeriesNumber: 9099}
	data, info, err := EncodeKOS(s, desc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kos.dcm")
	os.WriteFile(p, data, 0o644)
	errs, warns := dciodvfy(t, p)
	if len(errs) > 0 {
		t.Fatalf("dciodvfy:\n%s", strings.Join(errs, "\n"))
	}
	for _, w := range warns {
		t.Logf("dciodvfy: %s", w)
	}
	out := python(t, "verify_kos.py", p, paths[0], refs[0].SOPInstanceUID+","+refs[1].SOPInstanceUID+","+refs[2].SOPInstanceUID)
	if !strings.Contains(out, "OK 3 references") {
		t.Fatalf("pydicom:\n%s", out)
	}
	if info.References != 3 {
		t.Fatalf("info %+v", info)
	}
	bad := map[string]func(d *KOSDescription){
		"no references": func(d *KOSDescription) { d.References = nil },
		"duplicate":     func(d *KOSDescription) { d.References = append(d.References, d.References[0]) },
		"bad class UID": func(d *KOSDescription) { d.References = []KOSReference{{segSeries, "1.2.x", dicomstd.NewUID()}} },
		"no title":      func(d *KOSDescription) { d.Title = Code{} },
		"no equipment":  func(d *KOSDescription) { d.Equipment = Equipment{} },
	}
	for name, f := range bad {
		d := desc
		f(&d)
		if _, _, err := EncodeKOS(s, d); !errors.Is(err, ErrInvalidKOS) {
			t.Errorf("%s: want ErrInvalidKOS, got %v", name, err)
		}
	}
}
