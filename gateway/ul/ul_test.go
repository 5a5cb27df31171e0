package ul

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"dpersona/gateway/pdu"
)

const ts = "1.2.840.10008.1.2"

// Both sides of this package against each other over a pipe: negotiation, a command and a
// 100 kB data set fragmented to a 4 KiB peer limit and reassembled, then release.
func TestRequestAcceptMessageRelease(t *testing.T) {
	c1, c2 := net.Pipe()
	type accepted struct {
		a   *Association
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		a, _, err := Accept(c2, Config{MaxPDULength: 4096}, func(rq *pdu.AssociateRQ) ([]pdu.PresentationContextAC, *pdu.AssociateRJ) {
			var out []pdu.PresentationContextAC
			for _, pc := range rq.PresentationContexts {
				res := pdu.ResultAcceptance
				if pc.AbstractSyntax != "1.2.3" {
					res = pdu.ResultAbstractSyntaxNotSupported
				}
				out = append(out, pdu.PresentationContextAC{ID: pc.ID, Result: res, TransferSyntax: ts})
			}
			return out, nil
		})
		acc <- accepted{a, err}
	}()
	rq := &pdu.AssociateRQ{CalledAE: "SCP", CallingAE: "SCU", ApplicationContext: pdu.ApplicationContextName, PresentationContexts: []pdu.PresentationContextRQ{
		{ID: 1, AbstractSyntax: "1.2.3", TransferSyntaxes: []string{ts}}, {ID: 3, AbstractSyntax: "1.2.4", TransferSyntaxes: []string{ts}}}}
	scu, err := Request(c1, Config{MaxPDULength: 4096}, rq)
	if err != nil {
		t.Fatal(err)
	}
	r := <-acc
	if r.err != nil {
		t.Fatal(r.err)
	}
	scp := r.a
	if pc, ok := scu.Context(1); !ok || !pc.Accepted || pc.TransferSyntax != ts {
		t.Fatalf("context 1: %+v", pc)
	}
	if pc, ok := scu.Context(3); !ok || pc.Accepted || pc.Result != pdu.ResultAbstractSyntaxNotSupported {
		t.Fatalf("context 3: %+v", pc)
	}
	if scu.PeerMaxPDULength != 4096 || scp.CallingAE != "SCU" || scp.CalledAE != "SCP" {
		t.Fatalf("peer limits/AEs: %d %s %s", scu.PeerMaxPDULength, scp.CallingAE, scp.CalledAE)
	}
	cmd := bytes.Repeat([]byte{0xC0}, 5000) // longer than one PDU
	data := make([]byte, 100_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sent := make(chan error, 1)
	go func() {
		if err := scu.WriteCommand(1, cmd); err != nil {
			sent <- err
			return
		}
		sent <- scu.WriteData(1, bytes.NewReader(data), int64(len(data)))
	}()
	id, got, err := scp.ReadCommand()
	if err != nil || id != 1 || !bytes.Equal(got, cmd) {
		t.Fatalf("command: id %d, %d bytes, %v", id, len(got), err)
	}
	gotData, err := io.ReadAll(scp.DataReader(1))
	if err != nil || !bytes.Equal(gotData, data) {
		t.Fatalf("data set: %d bytes, %v", len(gotData), err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() { released <- scu.Release() }()
	if _, _, err := scp.ReadCommand(); !errors.Is(err, ErrReleaseRequested) {
		t.Fatalf("want ErrReleaseRequested, got %v", err)
	}
	scp.ReplyRelease()
	if err := <-released; err != nil {
		t.Fatalf("release: %v", err)
	}
}

func TestRejectionAndAbortReachTheRequestor(t *testing.T) {
	c1, c2 := net.Pipe()
	go Accept(c2, Config{}, func(*pdu.AssociateRQ) ([]pdu.PresentationContextAC, *pdu.AssociateRJ) {
		return nil, &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourceServiceProviderPresentation, Reason: pdu.RejectReasonLocalLimitExceeded}
	})
	_, err := Request(c1, Config{ARTIM: 5 * time.Second}, &pdu.AssociateRQ{CalledAE: "A", CallingAE: "B", PresentationContexts: []pdu.PresentationContextRQ{{ID: 1, AbstractSyntax: "1.2", TransferSyntaxes: []string{ts}}}})
	var rj pdu.AssociateRJ
	if !errors.Is(err, ErrRejected) || !errors.As(err, &rj) || rj.Reason != pdu.RejectReasonLocalLimitExceeded {
		t.Fatalf("want the rejection, got %v", err)
	}
	// An A-ABORT while waiting for a command is reported as such.
	c3, c4 := net.Pipe()
	a := newAssociation(c3, Config{}.withDefaults())
	go c4.Write((&pdu.Abort{Source: 2, Reason: 0}).Encode())
	if _, _, err := a.ReadCommand(); !errors.Is(err, ErrPeerAborted) {
		t.Fatalf("want ErrPeerAborted, got %v", err)
	}
}
