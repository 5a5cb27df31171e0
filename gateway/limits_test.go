package gateway

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/gateway/pdu"
	"dpersona/gateway/ul"
	"dpersona/internal/obs"
	"dpersona/internal/testutil"
)

// Below the disk watermark a new association is refused as "out of resources": A-ASSOCIATE-RJ,
// transient, local limit exceeded, before any instance is sent.
func TestDiskWatermarkRejectsNewAssociations(t *testing.T) {
	testutil.RequireTool(t, "storescu")
	// No file system has 4 EiB free: the gateway is always below this watermark.
	g := startGateway(t, gatewayOptions{minFree: 1 << 62})
	before := obs.RejectionsTotal.With(obs.RejectDiskLow).Value()
	files := dicomFiles(t, testutil.Testdata("dicom", "ct2-pydicom"))
	out, err := runTool(t, 30*time.Second, "storescu", append([]string{"-v", "-R", "-aet", "MODALITY", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)}, files...)...)
	if err == nil || !strings.Contains(out, "Association Rejected") || !strings.Contains(out, "Transient") || !strings.Contains(out, "Local Limit Exceeded") {
		t.Fatalf("want a transient local-limit-exceeded rejection, got err=%v:\n%s", err, out)
	}
	if n := len(storedFiles(t, g.dataDir)); n != 0 {
		t.Fatalf("%d instances stored below the watermark", n)
	}
	if got := obs.RejectionsTotal.With(obs.RejectDiskLow).Value() - before; got != 1 {
		t.Fatalf("disk_low rejections counted %v, want 1", got)
	}
	if !strings.Contains(g.logs.String(), "below the") {
		t.Fatalf("the rejection's cause was not logged:\n%s", g.logs.String())
	}
}

// An instance over the size limit is refused with Out of Resources (0xA700) and a clear log line;
// nothing of it stays on disk, and smaller instances on the same association are stored.
func TestInstanceSizeLimit(t *testing.T) {
	testutil.RequireTool(t, "storescu")
	g := startGateway(t, gatewayOptions{maxInstance: 100 << 10})
	before := obs.RejectionsTotal.With(obs.RejectInstanceTooLarge).Value()
	big := dicomFiles(t, testutil.Testdata("dicom", "lidc-ct-0004"))  // 0.5 MB each
	small := dicomFiles(t, testutil.Testdata("dicom", "ct2-pydicom")) // 4 KB each
	out, _ := runTool(t, 60*time.Second, "storescu", append(append([]string{"-v", "--no-halt", "-aet", "MODALITY", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)}, big...), small...)...)
	if n := strings.Count(out, "Received Store Response (Refused: OutOfResources)"); n != len(big) {
		t.Fatalf("want %d Out of Resources responses, got %d:\n%s", len(big), n, out)
	}
	if n := strings.Count(out, "Received Store Response (Success)"); n != len(small) {
		t.Fatalf("want %d successes, got %d:\n%s", len(small), n, out)
	}
	if n := len(storedFiles(t, g.dataDir)); n != len(small) {
		t.Fatalf("stored %d files, want only the %d small ones", n, len(small))
	}
	left, _ := os.ReadDir(filepath.Join(g.dataDir, "incoming"))
	if len(left) != 0 {
		t.Fatalf("%d temporary files left in incoming/", len(left))
	}
	if got := obs.RejectionsTotal.With(obs.RejectInstanceTooLarge).Value() - before; got != float64(len(big)) {
		t.Fatalf("instance_too_large counted %v, want %d", got, len(big))
	}
	if !strings.Contains(g.logs.String(), "instance size limit of 102400 bytes") {
		t.Fatalf("no clear log line for the oversized instances:\n%s", g.logs.String())
	}
}

// A P-DATA-TF longer than the advertised maximum aborts the association and is counted as
// pdu_too_large, not as a generic protocol error.
func TestPDUTooLargeCounted(t *testing.T) {
	g := startGateway(t, gatewayOptions{ul: ul.Config{MaxPDULength: 16384}})
	before := obs.RejectionsTotal.With(obs.RejectPDUTooLarge).Value()
	c := rawAssociate(t, g.addr, "BIGPDU", "DPERSONA", verificationContext())
	defer c.Close()
	hdr := make([]byte, pdu.HeaderLen+6)
	pdu.PutHeader(hdr, pdu.TypePDataTF, 1<<20)
	binary.BigEndian.PutUint32(hdr[pdu.HeaderLen:], 1<<20-4)
	hdr[pdu.HeaderLen+4], hdr[pdu.HeaderLen+5] = 1, pdu.PDVCommand|pdu.PDVLast
	if _, err := c.Write(hdr); err != nil {
		t.Fatal(err)
	}
	expectAbortOrClose(t, c)
	testutil.WaitFor(t, 5*time.Second, "pdu_too_large counted", func() bool {
		return obs.RejectionsTotal.With(obs.RejectPDUTooLarge).Value() == before+1
	})
}

// A known AE calling from a host outside its list is counted as host_not_allowed, an unknown AE
// as calling_ae_not_allowed. (127.0.0.1 is listed for another AE, so the connection itself is
// admitted; a host in no entry is closed at accept: TestUnlistedHostClosedAtOnce.)
func TestHostNotAllowedCountedApart(t *testing.T) {
	g := startGateway(t, gatewayOptions{policy: Policy{AETitles: []string{"DPERSONA"}, Peers: []Peer{
		{AETitle: "FARAWAY", Hosts: []string{"10.1.2.0/24"}}, {AETitle: "LOCAL", Hosts: []string{"127.0.0.1"}}}}})
	host0 := obs.RejectionsTotal.With(obs.RejectHostNotAllowed).Value()
	ae0 := obs.RejectionsTotal.With(obs.RejectCallingAENotAllowed).Value()
	for _, calling := range []string{"FARAWAY", "STRANGER"} {
		if out, err := runTool(t, 20*time.Second, "echoscu", "-aet", calling, "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)); err == nil {
			t.Fatalf("%s was let in:\n%s", calling, out)
		}
	}
	if h, a := obs.RejectionsTotal.With(obs.RejectHostNotAllowed).Value()-host0, obs.RejectionsTotal.With(obs.RejectCallingAENotAllowed).Value()-ae0; h != 1 || a != 1 {
		t.Fatalf("host_not_allowed +%v, calling_ae_not_allowed +%v; want +1 each", h, a)
	}
}
