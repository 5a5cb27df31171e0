package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"dpersona/gateway/dimse"
	"dpersona/gateway/pdu"
	"dpersona/gateway/scu"
	"dpersona/gateway/store"
	"dpersona/gateway/ul"
	"dpersona/internal/testutil"
)

// Small PDUs in both directions: the gateway advertises 4 KiB, so a 0.5 MB instance arrives in
// about 130 fragments; the SCU advertises 4 KiB too, so the responses are fragmented if needed.
func TestSmallPDUsBothWays(t *testing.T) {
	g := startGateway(t, gatewayOptions{ul: ul.Config{MaxPDULength: 4096}})
	files := dicomFiles(t, testutil.Testdata("dicom", "lidc-ct-0005"))[:3]
	props, _ := scu.ProposalsForFiles(files)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "SMALL", CalledAE: "DPERSONA", UL: ul.Config{MaxPDULength: 4096}}, props)
	if err != nil {
		t.Fatal(err)
	}
	if c.Association().PeerMaxPDULength != 4096 {
		t.Fatalf("gateway advertised %d", c.Association().PeerMaxPDULength)
	}
	for _, f := range files {
		if _, err := c.StoreFile(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	c.Release()
	// storescu with the gateway's small limit: dcmtk fragments to it as well.
	out, err := runTool(t, 30*time.Second, "storescu", "-aet", "DCMTK", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port), testutil.Testdata("dicom", "lidc-ct-0005", "007.dcm"))
	if err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	if n := len(storedFiles(t, g.dataDir)); n != 4 {
		t.Fatalf("stored %d", n)
	}
}

// When free space falls below the watermark while an association is open, every C-STORE on it is
// refused with "out of resources"; nothing is stored, the association stays usable (echo still
// works). New associations are refused outright (TestDiskWatermarkRejectsNewAssociations).
func TestDiskWatermarkRefusesWithOutOfResources(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	f := testutil.Testdata("dicom", "ct2-pydicom", "17106")
	props, _ := scu.ProposalsForFiles([]string{f})
	ctx := context.Background()
	c, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "FULL", CalledAE: "DPERSONA"}, props)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	g.srv.SetMinFreeBytes(1 << 62) // no file system has 4 EiB free
	_, err = c.StoreFile(ctx, f)
	var se *scu.StatusError
	if !errors.As(err, &se) || se.Status != dimse.StatusOutOfResources || !strings.Contains(se.Comment, "watermark") {
		t.Fatalf("want 0xA700 naming the watermark, got %v", err)
	}
	if err := c.Echo(ctx); err != nil {
		t.Fatalf("association unusable after a refusal: %v", err)
	}
	if n := len(storedFiles(t, g.dataDir)); n != 0 {
		t.Fatalf("stored %d", n)
	}
}

func TestStatusForStoreErrors(t *testing.T) {
	cases := []struct {
		err  error
		want dimse.Status
	}{
		{fmt.Errorf("%w: write: %w", store.ErrOutOfResources, &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}), dimse.StatusOutOfResources},
		{fmt.Errorf("%w: fsync: %w", store.ErrOutOfResources, syscall.EIO), dimse.StatusOutOfResourcesLocal},
		{fmt.Errorf("%w: SOPInstanceUID differs", store.ErrMismatch), dimse.StatusDataSetDoesNotMatchClass},
		{fmt.Errorf("%w: no StudyInstanceUID", store.ErrCannotUnderstand), dimse.StatusCannotUnderstand},
	}
	for _, c := range cases {
		if got := statusFor(c.err); got != c.want {
			t.Errorf("statusFor(%v) = 0x%04X, want 0x%04X", c.err, got, c.want)
		}
	}
}

// Shutdown aborts idle associations at once and returns; Serve reports ErrServerClosed.
func TestShutdownAbortsIdleAssociations(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	ctx := context.Background()
	c, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "IDLE", CalledAE: "DPERSONA"}, scu.VerificationProposal())
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "association registered", func() bool { return g.srv.Stats().ActiveAssociations == 1 })
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown waited %v for an idle association", d)
	}
	if err := c.Echo(ctx); err == nil {
		t.Fatal("echo succeeded on an association aborted by shutdown")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// A peer that connects and says nothing is dropped after ARTIM; one that stops in the middle of
// a PDU is dropped after the read timeout. Neither holds a slot afterwards.
func TestARTIMAndReadTimeout(t *testing.T) {
	g := startGateway(t, gatewayOptions{ul: ul.Config{ARTIM: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}})
	silent, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("silent peer got data")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("silent peer dropped after %v", d)
	}
	stalled := rawAssociate(t, g.addr, "STALL", "DPERSONA", verificationContext())
	defer stalled.Close()
	stalled.Write([]byte{0x04, 0, 0, 0, 0x10, 0}) // a P-DATA-TF header, then nothing
	expectAbortOrClose(t, stalled)
	testutil.WaitFor(t, 5*time.Second, "no association left", func() bool { return g.srv.Stats().ActiveAssociations == 0 })
}

// Shutdown lets an instance that is on the wire finish: it is stored and acknowledged, then the
// association is aborted and Shutdown returns.
func TestShutdownFinishesInstanceInFlight(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	meta, _, data := readFixture(t, testutil.Testdata("dicom", "ct2-pydicom", "17136"))
	c := rawAssociate(t, g.addr, "BUSY", "DPERSONA", pdu.PresentationContextRQ{ID: 1, AbstractSyntax: meta.MediaStorageSOPClassUID, TransferSyntaxes: []string{meta.TransferSyntaxUID}})
	defer c.Close()
	cmd := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 5, AffectedSOPClassUID: meta.MediaStorageSOPClassUID, AffectedSOPInstanceUID: meta.MediaStorageSOPInstanceUID, CommandDataSetType: dimse.DataSetPresent}).Encode()
	c.Write((&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: cmd}, {ContextID: 1, Data: data[:100]}}}).Encode())
	testutil.WaitFor(t, 5*time.Second, "the instance to be in progress", func() bool {
		e, _ := os.ReadDir(g.dataDir + "/incoming")
		return len(e) == 1
	})
	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdownDone <- g.srv.Shutdown(ctx)
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned (%v) while an instance was in flight", err)
	default:
	}
	c.Write((&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Last: true, Data: data[100:]}}}).Encode())
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	v, err := pdu.Read(c, 1<<20)
	if err != nil {
		t.Fatalf("no response to the in-flight instance: %v", err)
	}
	rsp, err := dimse.Decode(v.(*pdu.PDataTF).PDVs[0].Data)
	if err != nil || rsp.Status != dimse.StatusSuccess || rsp.MessageIDBeingRespondedTo != 5 {
		t.Fatalf("in-flight instance answered %v, %v", rsp, err)
	}
	if err := <-shutdownDone; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if n := len(storedFiles(t, g.dataDir)); n != 1 {
		t.Fatalf("stored %d", n)
	}
}
