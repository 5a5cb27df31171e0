package store

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dpersona/gateway/part10"
)

// implicitLE encodes top-level elements (tag, string value) in implicit VR little endian,
// values padded to even length.
func implicitLE(els ...any) []byte {
	var b []byte
	for i := 0; i < len(els); i += 2 {
		tag, v := els[i].(uint32), els[i+1].(string)
		if len(v)%2 == 1 {
			v += "\x00"
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(tag>>16))
		b = binary.LittleEndian.AppendUint16(b, uint16(tag))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func commitDataSet(t *testing.T, s *Store, sop string, ds []byte, chunk int) (StoredInstance, error) {
	t.Helper()
	p, err := s.Begin(Incoming{CalledAE: "DPERSONA", CallingAE: "TEST", SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: sop, TransferSyntaxUID: part10.ImplicitVRLittleEndian})
	if err != nil {
		t.Fatal(err)
	}
	for len(ds) > 0 {
		n := min(chunk, len(ds))
		p.Write(ds[:n])
		ds = ds[n:]
	}
	return p.Commit()
}

// Commit identifies the instance from the head it kept while the data set was written, and from
// the file when the identifying attributes lie beyond that head; either way the stored file and
// the reported identity are the same, and nothing is left in incoming/.
func TestCommitIdentifiesFromHeadOrFile(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	const class, study, series = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.3.4.5"
	pixels := strings.Repeat("\x01\x02", 150*1024) // a data set far larger than the kept head
	cases := []struct {
		name, sop string
		ds        []byte
	}{
		{"short", "1.2.3.4.5.1", implicitLE(uint32(0x00080016), class, uint32(0x00080018), "1.2.3.4.5.1", uint32(0x00080060), "CT", uint32(0x0020000D), study, uint32(0x0020000E), series)},
		{"large, attributes in the head", "1.2.3.4.5.2", implicitLE(uint32(0x00080016), class, uint32(0x00080018), "1.2.3.4.5.2", uint32(0x00080060), "CT", uint32(0x0020000D), study, uint32(0x0020000E), series, uint32(0x7FE00010), pixels)},
		// A 40 KB comment before the UIDs pushes them past the kept head: read back from the file.
		{"large, attributes past the head", "1.2.3.4.5.3", implicitLE(uint32(0x00080016), class, uint32(0x00080018), "1.2.3.4.5.3", uint32(0x00080060), "CT", uint32(0x00104000), strings.Repeat("x", 40*1024), uint32(0x0020000D), study, uint32(0x0020000E), series, uint32(0x7FE00010), pixels)},
	}
	for _, c := range cases {
		for _, chunk := range []int{7, 4096, 1 << 20} {
			inst, err := commitDataSet(t, s, c.sop, c.ds, chunk)
			if err != nil {
				t.Fatalf("%s (writes of %d): %v", c.name, chunk, err)
			}
			if inst.SOPInstanceUID != c.sop || inst.StudyInstanceUID != study || inst.SeriesInstanceUID != series || inst.Modality != "CT" {
				t.Fatalf("%s: identified as %+v", c.name, inst)
			}
			st, err := os.Stat(inst.Path)
			if err != nil || st.Size() != inst.Size {
				t.Fatalf("%s: stored file %v, size %d, reported %d", c.name, err, st.Size(), inst.Size)
			}
			back, err := ReadInstance(inst.Path)
			if err != nil || back.SOPInstanceUID != c.sop || back.StudyInstanceUID != study {
				t.Fatalf("%s: stored file reads back as %+v, %v", c.name, back, err)
			}
		}
	}
	// A data set without a StudyInstanceUID is refused whatever its length.
	for _, ds := range [][]byte{
		implicitLE(uint32(0x00080016), class, uint32(0x00080018), "1.2.3.9"),
		implicitLE(uint32(0x00080016), class, uint32(0x00080018), "1.2.3.9", uint32(0x7FE00010), pixels),
	} {
		if _, err := commitDataSet(t, s, "1.2.3.9", ds, 4096); !errors.Is(err, ErrCannotUnderstand) {
			t.Fatalf("data set without study UID: %v", err)
		}
	}
	if left, _ := os.ReadDir(filepath.Join(s.DataDir(), "incoming")); len(left) != 0 {
		t.Fatalf("%d files left in incoming/", len(left))
	}
}
