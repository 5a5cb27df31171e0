package gateway

import (
	"net"
	"testing"

	"dpersona/gateway/part10"
	"dpersona/gateway/pdu"
)

func TestPolicyNegotiate(t *testing.T) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	p := Policy{AETitles: []string{"GW1", "GW2"}, Peers: []Peer{{AETitle: "LOCAL", Hosts: []string{"127.0.0.0/8"}}, {AETitle: "ANYWHERE"}, {AETitle: "EXACT", Hosts: []string{"10.0.0.5"}}},
		AllowSOPClasses: []string{"1.2.3.4.5.private"}, AcceptBigEndian: true}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	rq := func(calling, called string, pcs ...pdu.PresentationContextRQ) *pdu.AssociateRQ {
		return &pdu.AssociateRQ{CallingAE: calling, CalledAE: called, PresentationContexts: pcs}
	}
	for _, c := range []struct {
		calling, called string
		reason          pdu.RejectReason // 0 = accepted
	}{
		{"LOCAL", "GW1", 0}, {"LOCAL", "GW2", 0}, {"ANYWHERE", "GW1", 0},
		{"EXACT", "GW1", pdu.RejectReasonCallingAENotRecognized},
		{"LOCAL", "GW3", pdu.RejectReasonCalledAENotRecognized},
		{"local", "GW1", pdu.RejectReasonCallingAENotRecognized},
	} {
		_, rj, _, _ := p.negotiate(rq(c.calling, c.called, verificationCtx()), local)
		switch {
		case c.reason == 0 && rj != nil:
			t.Errorf("%s -> %s rejected: %v", c.calling, c.called, *rj)
		case c.reason != 0 && (rj == nil || rj.Reason != c.reason || rj.Source != pdu.RejectSourceServiceUser || rj.Result != pdu.RejectPermanent):
			t.Errorf("%s -> %s: got %v, want reason %d", c.calling, c.called, rj, c.reason)
		}
	}
	ans, _, _, _ := p.negotiate(rq("LOCAL", "GW1",
		pdu.PresentationContextRQ{ID: 1, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{part10.ExplicitVRBigEndian}},
		pdu.PresentationContextRQ{ID: 3, AbstractSyntax: "1.2.3.4.5.private", TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}},
		pdu.PresentationContextRQ{ID: 5, AbstractSyntax: "1.2.3.4.5.other", TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}},
		pdu.PresentationContextRQ{ID: 7, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.66.4", TransferSyntaxes: []string{"1.2.840.10008.1.2.1.99", part10.ExplicitVRLittleEndian}},
	), local)
	want := []pdu.PresentationContextAC{
		{ID: 1, Result: pdu.ResultAcceptance, TransferSyntax: part10.ExplicitVRBigEndian},
		{ID: 3, Result: pdu.ResultAcceptance, TransferSyntax: part10.ImplicitVRLittleEndian},
		{ID: 5, Result: pdu.ResultAbstractSyntaxNotSupported},
		{ID: 7, Result: pdu.ResultAcceptance, TransferSyntax: part10.ExplicitVRLittleEndian},
	}
	for i, w := range want {
		if ans[i] != w {
			t.Errorf("context %d: got %+v want %+v", w.ID, ans[i], w)
		}
	}
	bad := Policy{AETitles: []string{"WAY_TOO_LONG_AE_TITLE"}}
	if err := bad.Validate(); err == nil {
		t.Error("a 21-character AE title validated")
	}
}

func verificationCtx() pdu.PresentationContextRQ {
	return pdu.PresentationContextRQ{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}}
}
