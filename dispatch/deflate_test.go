package dispatch

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"dpersona/gateway/part10"
	"dpersona/internal/dicomstd"
	"dpersona/internal/testutil"
)

// TestDeflatedObjectsReachEveryPeer: a SEG in the Deflated Explicit VR Little Endian transfer
// syntax (pipeline Encoding.Deflate) goes as it is to a peer that accepts deflate (dcmtk's
// storescp preferring it, Orthanc over C-STORE and over STOW-RS) and is inflated, then
// converted, for a peer that takes only implicit VR little endian; what arrives has the source's
// content every time.
func TestDeflatedObjectsReachEveryPeer(t *testing.T) {
	src := testutil.Testdata("dicom", "odd-23x38x3-dcmqi", "label.seg.dcm")
	plain := segFile(t, src)
	deflated, err := dicomstd.DeflateFile(plain.Data)
	if err != nil {
		t.Fatal(err)
	}
	file := ExportFile{SOPClassUID: plain.SOPClassUID, SOPInstanceUID: plain.SOPInstanceUID, Data: deflated}
	for _, tc := range []struct {
		name, opt, wantTS, ref string
	}{
		{"deflate-preferring peer", "+xd", dicomstd.DeflatedExplicitVRLittleEndian, src},
		{"implicit-only peer", "+xi", part10.ImplicitVRLittleEndian, dcmtkConvert(t, src, "+ti")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, dir := startStorescp(t, "STORESCP", tc.opt)
			e := &CStoreExporter{Addr: addr, CalledAE: "STORESCP", CallingAE: "DPERSONA", ResponseTimeout: 10 * time.Second}
			st, err := e.Export(context.Background(), []ExportFile{file})
			if err != nil || st[0].Err != nil || st[0].Status != "0x0000" {
				t.Fatalf("export: %v %+v", err, st)
			}
			received, _ := filepath.Glob(filepath.Join(dir, "*"))
			if len(received) != 1 {
				t.Fatalf("storescp received %d files", len(received))
			}
			m, _ := splitPart10(t, mustRead(t, received[0]))
			if m.TransferSyntaxUID != tc.wantTS {
				t.Fatalf("arrived as %s, want %s", m.TransferSyntaxUID, tc.wantTS)
			}
			got, want := dump(t, received[0]), dump(t, tc.ref)
			if got != want {
				t.Fatalf("arrived changed:\n%s\nwant:\n%s", got, want)
			}
		})
	}

	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{AET: "PACS"})
	e := &CStoreExporter{Addr: "127.0.0.1:" + strconv.Itoa(orthanc.DICOMPort), CalledAE: "PACS", CallingAE: "DPERSONA", ResponseTimeout: 10 * time.Second}
	st, err := e.Export(context.Background(), []ExportFile{file})
	if err != nil || st[0].Err != nil {
		t.Fatalf("export to Orthanc: %v %+v", err, st)
	}
	var ids []string
	if err := orthanc.GetJSON("/instances", &ids); err != nil || len(ids) != 1 {
		t.Fatalf("Orthanc instances %v %v", ids, err)
	}
	var meta map[string]string
	if err := orthanc.GetJSON("/instances/"+ids[0]+"/metadata?expand", &meta); err != nil {
		t.Fatal(err)
	}
	if meta["TransferSyntax"] != dicomstd.DeflatedExplicitVRLittleEndian {
		t.Fatalf("Orthanc received the SEG in %q, want it deflated", meta["TransferSyntax"])
	}

	// DICOMweb STOW-RS takes the deflated file as it is (application/dicom is any transfer syntax).
	web := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	st, err = (&STOWExporter{URL: orthancSTOW(web).URL}).Export(context.Background(), []ExportFile{file})
	if err != nil || st[0].Err != nil {
		t.Fatalf("STOW-RS of the deflated SEG: %v %+v", err, st)
	}
	if segs := orthancSEGs(t, web); len(segs) != 1 {
		t.Fatalf("Orthanc (STOW-RS) holds %v", segs)
	}
}
