package ul

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"dpersona/gateway/pdu"
)

// Each phase of an association (PS3.8 state) against each PDU type a peer can send in it, over
// net.Pipe with the peer written by hand: what this package answers (nothing, or an A-ABORT with
// which source and reason), what it returns, and that it closes the connection.

const testAbstract = "1.2.840.10008.1.1"

// rawPDU returns an encoded PDU of every type a peer can send, plus one unknown type.
func rawPDUs() map[string][]byte {
	rq := (&pdu.AssociateRQ{CalledAE: "SCP", CallingAE: "SCU", PresentationContexts: []pdu.PresentationContextRQ{
		{ID: 1, AbstractSyntax: testAbstract, TransferSyntaxes: []string{ts}}}}).Encode()
	ac := (&pdu.AssociateAC{CalledAE: "SCP", CallingAE: "SCU", PresentationContexts: []pdu.PresentationContextAC{
		{ID: 1, Result: pdu.ResultAcceptance, TransferSyntax: ts}}}).Encode()
	unknown := make([]byte, pdu.HeaderLen+4)
	pdu.PutHeader(unknown, 0x09, 4)
	return map[string][]byte{
		"A-ASSOCIATE-RQ": rq,
		"A-ASSOCIATE-AC": ac,
		"A-ASSOCIATE-RJ": (&pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceServiceUser, Reason: pdu.RejectReasonNoReason}).Encode(),
		"P-DATA-TF":      (&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{1, 2}}}}).Encode(),
		"A-RELEASE-RQ":   pdu.ReleaseRQ{}.Encode(),
		"A-RELEASE-RP":   pdu.ReleaseRP{}.Encode(),
		"A-ABORT":        (&pdu.Abort{Source: pdu.AbortSourceServiceUser, Reason: pdu.AbortReasonNotSpecified}).Encode(),
		"unknown 0x09":   unknown,
	}
}

// outcome is what the peer saw after sending its PDU: the A-ABORT it got (nil: none) and whether
// the connection was then closed.
type outcome struct {
	abort  *pdu.Abort
	closed bool
	other  any // a PDU other than A-ABORT
}

// observe reads what the side under test sends until it closes the connection (bounded).
func observe(t *testing.T, peer net.Conn) outcome {
	t.Helper()
	var o outcome
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		v, err := pdu.Read(peer, 1<<20)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.ErrUnexpectedEOF) {
				o.closed = true
				return o
			}
			t.Fatalf("peer read: %v", err)
		}
		switch p := v.(type) {
		case *pdu.Abort:
			o.abort = p
		default:
			o.other = p
		}
	}
}

// want describes the expected answer: no PDU at all (noAbort), or an A-ABORT with this source and
// reason; the connection is closed in every case.
type want struct {
	noAbort bool
	source  pdu.AbortSource
	reason  pdu.AbortReason
}

func (w want) String() string {
	if w.noAbort {
		return "close without A-ABORT"
	}
	return fmt.Sprintf("A-ABORT (%s, %s)", w.source, w.reason)
}

func check(t *testing.T, name string, o outcome, w want) {
	t.Helper()
	switch {
	case !o.closed:
		t.Errorf("%s: connection left open", name)
	case o.other != nil:
		t.Errorf("%s: got %T, want %v", name, o.other, w)
	case w.noAbort && o.abort != nil:
		t.Errorf("%s: got A-ABORT (%s, %s), want %v", name, o.abort.Source, o.abort.Reason, w)
	case !w.noAbort && o.abort == nil:
		t.Errorf("%s: no A-ABORT, want %v", name, w)
	case !w.noAbort && (o.abort.Source != w.source || o.abort.Reason != w.reason):
		t.Errorf("%s: got A-ABORT (%s, %s), want %v", name, o.abort.Source, o.abort.Reason, w)
	}
}

// exchange runs op (the side under test) while the peer sends the given PDUs, and returns what
// the peer saw until the connection closed and what op returned.
func exchange(t *testing.T, peer net.Conn, op func() error, send ...[]byte) (outcome, error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	go func() {
		for _, b := range send {
			if _, err := peer.Write(b); err != nil {
				return
			}
		}
	}()
	o := observe(t, peer)
	return o, <-done
}

// accept is the acceptor's side as an exchange op.
func accept(c net.Conn, cfg Config) func() error {
	return func() error {
		_, _, err := Accept(c, cfg, acceptAll)
		return err
	}
}

// readCommand is an established association's side as an exchange op.
func readCommand(a *Association) func() error {
	return func() error {
		_, _, err := a.ReadCommand()
		return err
	}
}

func wantErr(t *testing.T, op string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) && !(want == nil && err == nil) {
		t.Errorf("%s returned %v, want %v", op, err, want)
	}
}

func wantTimeout(t *testing.T, op string, err error) {
	t.Helper()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%s returned %v, want a timeout", op, err)
	}
}

var (
	providerUnexpected   = want{source: pdu.AbortSourceServiceProvider, reason: pdu.AbortReasonUnexpectedPDU}
	providerUnrecognized = want{source: pdu.AbortSourceServiceProvider, reason: pdu.AbortReasonUnrecognizedPDU}
	providerInvalid      = want{source: pdu.AbortSourceServiceProvider, reason: pdu.AbortReasonInvalidParameterValue}
	userUnexpected       = want{source: pdu.AbortSourceServiceUser, reason: pdu.AbortReasonUnexpectedPDU}
	userInvalid          = want{source: pdu.AbortSourceServiceUser, reason: pdu.AbortReasonInvalidParameterValue}
	userNotSpecified     = want{source: pdu.AbortSourceServiceUser, reason: pdu.AbortReasonNotSpecified}
	silentClose          = want{noAbort: true}
)

func acceptAll(rq *pdu.AssociateRQ) ([]pdu.PresentationContextAC, *pdu.AssociateRJ) {
	var out []pdu.PresentationContextAC
	for _, pc := range rq.PresentationContexts {
		out = append(out, pdu.PresentationContextAC{ID: pc.ID, Result: pdu.ResultAcceptance, TransferSyntax: ts})
	}
	return out, nil
}

// Sta2 (acceptor, transport open, waiting for A-ASSOCIATE-RQ).
func TestAcceptorAwaitingAssociateRQ(t *testing.T) {
	wants := map[string]want{
		"A-ASSOCIATE-AC": providerUnexpected,
		"A-ASSOCIATE-RJ": providerUnexpected,
		"P-DATA-TF":      providerUnexpected,
		"A-RELEASE-RQ":   providerUnexpected,
		"A-RELEASE-RP":   providerUnexpected,
		"A-ABORT":        providerUnexpected, // PS3.8 AA-2 would close silently; see the package doc
		"unknown 0x09":   providerUnexpected,
	}
	for name, b := range rawPDUs() {
		if name == "A-ASSOCIATE-RQ" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			c, peer := net.Pipe()
			o, err := exchange(t, peer, accept(c, Config{ARTIM: 5 * time.Second}), b)
			check(t, name, o, wants[name])
			wantErr(t, "Accept", err, ErrProtocol)
		})
	}
	// A malformed A-ASSOCIATE-RQ (its body cut short of the fixed fields).
	t.Run("malformed A-ASSOCIATE-RQ", func(t *testing.T) {
		c, peer := net.Pipe()
		bad := make([]byte, pdu.HeaderLen+10)
		pdu.PutHeader(bad, pdu.TypeAssociateRQ, 10)
		o, err := exchange(t, peer, accept(c, Config{ARTIM: 5 * time.Second}), bad)
		check(t, "malformed RQ", o, providerInvalid)
		wantErr(t, "Accept", err, ErrProtocol)
	})
	// ARTIM: a peer that sends nothing is dropped without a PDU.
	t.Run("silence", func(t *testing.T) {
		c, peer := net.Pipe()
		o, err := exchange(t, peer, accept(c, Config{ARTIM: 50 * time.Millisecond}))
		check(t, "silence", o, silentClose)
		wantTimeout(t, "Accept", err)
	})
}

var oneContext = []pdu.PresentationContextRQ{{ID: 1, AbstractSyntax: testAbstract, TransferSyntaxes: []string{ts}}}

// Sta3 -> Sta13: the acceptor rejects (A-ASSOCIATE-RJ, then close), for its own reasons before the
// negotiator is asked.
func TestAcceptorRejects(t *testing.T) {
	for name, c := range map[string]struct {
		rq     *pdu.AssociateRQ
		source pdu.RejectSource
		reason pdu.RejectReason
	}{
		"protocol version": {&pdu.AssociateRQ{ProtocolVersion: 2, CalledAE: "SCP", CallingAE: "SCU", PresentationContexts: oneContext}, pdu.RejectSourceServiceProviderACSE, pdu.RejectReasonProtocolVersionNotSupported},
		"app context":      {&pdu.AssociateRQ{CalledAE: "SCP", CallingAE: "SCU", ApplicationContext: "1.2.3", PresentationContexts: oneContext}, pdu.RejectSourceServiceUser, pdu.RejectReasonApplicationContextNotSupported},
	} {
		t.Run(name, func(t *testing.T) {
			conn, peer := net.Pipe()
			done := make(chan error, 1)
			go func() {
				_, _, err := Accept(conn, Config{ARTIM: 5 * time.Second}, func(*pdu.AssociateRQ) ([]pdu.PresentationContextAC, *pdu.AssociateRJ) {
					t.Error("negotiator asked about a request the upper layer must reject itself")
					return nil, nil
				})
				done <- err
			}()
			go peer.Write(c.rq.Encode())
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			v, err := pdu.Read(peer, 1<<16)
			rj, ok := v.(*pdu.AssociateRJ)
			if err != nil || !ok || rj.Result != pdu.RejectPermanent || rj.Source != c.source || rj.Reason != c.reason {
				t.Fatalf("got %#v, %v; want A-ASSOCIATE-RJ (permanent, %d, %d)", v, err, c.source, c.reason)
			}
			check(t, name, observe(t, peer), silentClose)
			wantErr(t, "Accept", <-done, ErrRejected)
		})
	}
}

type requestResult struct {
	a   *Association
	err error
}

// requestOver runs Request on one end of a pipe; the peer end is returned after it read the RQ.
func requestOver(t *testing.T) (peer net.Conn, done chan requestResult) {
	t.Helper()
	c, peer := net.Pipe()
	done = make(chan requestResult, 1)
	go func() {
		a, err := Request(c, Config{ARTIM: 5 * time.Second}, &pdu.AssociateRQ{CalledAE: "SCP", CallingAE: "SCU", PresentationContexts: oneContext})
		done <- requestResult{a, err}
	}()
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if v, err := pdu.Read(peer, 1<<16); err != nil {
		t.Fatalf("peer did not get the A-ASSOCIATE-RQ: %v", err)
	} else if _, ok := v.(*pdu.AssociateRQ); !ok {
		t.Fatalf("peer got %T, want A-ASSOCIATE-RQ", v)
	}
	return peer, done
}

// requestErr waits for Request as an exchange op (closing an association it established).
func requestErr(done chan requestResult) func() error {
	return func() error {
		r := <-done
		if r.a != nil {
			r.a.Close()
		}
		return r.err
	}
}

// Sta5 (requestor, A-ASSOCIATE-RQ sent, waiting for AC or RJ).
func TestRequestorAwaitingAssociateAC(t *testing.T) {
	for name, c := range map[string]struct {
		w       want
		wantErr error
	}{
		"A-ASSOCIATE-RQ": {userUnexpected, ErrProtocol},
		"P-DATA-TF":      {userUnexpected, ErrProtocol},
		"A-RELEASE-RQ":   {userUnexpected, ErrProtocol},
		"A-RELEASE-RP":   {userUnexpected, ErrProtocol},
		"unknown 0x09":   {userUnexpected, ErrProtocol},
		"A-ASSOCIATE-RJ": {silentClose, ErrRejected},
		"A-ABORT":        {silentClose, ErrPeerAborted},
	} {
		t.Run(name, func(t *testing.T) {
			peer, done := requestOver(t)
			o, err := exchange(t, peer, requestErr(done), rawPDUs()[name])
			check(t, name, o, c.w)
			wantErr(t, "Request", err, c.wantErr)
		})
	}
	// An AC that accepts a transfer syntax that was not proposed, and a malformed AC.
	badAC := (&pdu.AssociateAC{CalledAE: "SCP", CallingAE: "SCU", PresentationContexts: []pdu.PresentationContextAC{
		{ID: 1, Result: pdu.ResultAcceptance, TransferSyntax: "1.2.840.10008.1.2.2"}}}).Encode()
	shortAC := make([]byte, pdu.HeaderLen+10)
	pdu.PutHeader(shortAC, pdu.TypeAssociateAC, 10)
	for name, b := range map[string][]byte{"AC with an unproposed transfer syntax": badAC, "malformed AC": shortAC} {
		t.Run(name, func(t *testing.T) {
			peer, done := requestOver(t)
			o, err := exchange(t, peer, requestErr(done), b)
			check(t, name, o, userInvalid)
			wantErr(t, "Request", err, ErrProtocol)
		})
	}
	t.Run("accepted", func(t *testing.T) {
		peer, done := requestOver(t)
		go peer.Write(rawPDUs()["A-ASSOCIATE-AC"])
		if err := requestErr(done)(); err != nil {
			t.Fatalf("Request: %v", err)
		}
		check(t, "accepted then closed", observe(t, peer), silentClose)
	})
}

// established returns an association accepted by this package (the acceptor side) and the raw
// peer connection that requested it.
func established(t *testing.T, cfg Config) (*Association, net.Conn) {
	t.Helper()
	c, peer := net.Pipe()
	type result struct {
		a   *Association
		err error
	}
	res := make(chan result, 1)
	go func() {
		a, _, err := Accept(c, cfg, acceptAll)
		res <- result{a, err}
	}()
	go peer.Write(rawPDUs()["A-ASSOCIATE-RQ"])
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if v, err := pdu.Read(peer, 1<<16); err != nil {
		t.Fatalf("peer: %v", err)
	} else if _, ok := v.(*pdu.AssociateAC); !ok {
		t.Fatalf("peer got %T, want A-ASSOCIATE-AC", v)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.a.Close(); peer.Close() })
	return r.a, peer
}

// Sta6 (established, waiting for the next message).
func TestEstablishedAwaitingMessage(t *testing.T) {
	for name, c := range map[string]struct {
		w       want
		wantErr error
	}{
		"A-ASSOCIATE-RQ": {providerUnexpected, ErrProtocol},
		"A-ASSOCIATE-AC": {providerUnexpected, ErrProtocol},
		"A-ASSOCIATE-RJ": {providerUnexpected, ErrProtocol},
		"A-RELEASE-RP":   {providerUnexpected, ErrProtocol},
		"unknown 0x09":   {providerUnrecognized, ErrProtocol},
		"A-ABORT":        {silentClose, ErrPeerAborted},
	} {
		t.Run(name, func(t *testing.T) {
			a, peer := established(t, Config{ARTIM: 5 * time.Second})
			o, err := exchange(t, peer, readCommand(a), rawPDUs()[name])
			check(t, name, o, c.w)
			wantErr(t, "ReadCommand", err, c.wantErr)
		})
	}
	t.Run("A-RELEASE-RQ", func(t *testing.T) {
		a, peer := established(t, Config{ARTIM: 5 * time.Second})
		done := make(chan error, 1)
		go func() {
			_, _, err := a.ReadCommand()
			done <- err
		}()
		go peer.Write(pdu.ReleaseRQ{}.Encode())
		if err := <-done; !errors.Is(err, ErrReleaseRequested) {
			t.Fatalf("ReadCommand returned %v, want ErrReleaseRequested", err)
		}
		go a.ReplyRelease() // Sta8: answer, then close
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if v, err := pdu.Read(peer, 64); err != nil {
			t.Fatal(err)
		} else if _, ok := v.(*pdu.ReleaseRP); !ok {
			t.Fatalf("got %T, want A-RELEASE-RP", v)
		}
		peer.Close()
	})
	t.Run("P-DATA-TF command", func(t *testing.T) {
		a, peer := established(t, Config{ARTIM: 5 * time.Second})
		go peer.Write(rawPDUs()["P-DATA-TF"])
		id, cmd, err := a.ReadCommand()
		if err != nil || id != 1 || !bytes.Equal(cmd, []byte{1, 2}) {
			t.Fatalf("ReadCommand = %d, %x, %v", id, cmd, err)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		a, peer := established(t, Config{ARTIM: 5 * time.Second, IdleTimeout: 50 * time.Millisecond})
		o, err := exchange(t, peer, readCommand(a))
		check(t, "idle", o, silentClose)
		wantTimeout(t, "ReadCommand", err)
	})
}

// Sta6, inside P-DATA: PDVs that break the message rules.
func TestEstablishedBadPData(t *testing.T) {
	pdata := func(pdvs ...pdu.PDV) []byte { return (&pdu.PDataTF{PDVs: pdvs}).Encode() }
	big := make([]byte, 300)
	for name, c := range map[string]struct {
		wire    [][]byte
		w       want
		tooLong bool
	}{
		"data where a command is expected": {[][]byte{pdata(pdu.PDV{ContextID: 1, Last: true, Data: []byte{1}})}, providerUnexpected, false},
		"context never accepted":           {[][]byte{pdata(pdu.PDV{ContextID: 3, Command: true, Last: true, Data: []byte{1}})}, providerInvalid, false},
		"command split over two contexts": {[][]byte{
			pdata(pdu.PDV{ContextID: 1, Command: true, Data: []byte{1}}),
			pdata(pdu.PDV{ContextID: 3, Command: true, Last: true, Data: []byte{2}})}, providerInvalid, false},
		"A-RELEASE-RQ inside a command": {[][]byte{pdata(pdu.PDV{ContextID: 1, Command: true, Data: []byte{1}}), pdu.ReleaseRQ{}.Encode()}, providerUnexpected, false},
		"P-DATA-TF over the maximum":    {[][]byte{pdata(pdu.PDV{ContextID: 1, Command: true, Last: true, Data: big})}, providerInvalid, true},
		"reserved control bits": {[][]byte{func() []byte {
			b := pdata(pdu.PDV{ContextID: 1, Command: true, Last: true, Data: []byte{1}})
			b[pdu.HeaderLen+5] |= 0x80
			return b
		}()}, providerInvalid, false},
		"PDV longer than its PDU": {[][]byte{func() []byte {
			b := pdata(pdu.PDV{ContextID: 1, Command: true, Last: true, Data: []byte{1, 2, 3, 4}})
			b[pdu.HeaderLen+3] = 0x40 // PDV item length 64 in a 10-byte P-DATA-TF
			return b
		}()}, providerInvalid, false},
		"command set too long": {[][]byte{
			pdata(pdu.PDV{ContextID: 1, Command: true, Data: big[:200]}),
			pdata(pdu.PDV{ContextID: 1, Command: true, Last: true, Data: big[:200]})}, providerInvalid, false},
	} {
		t.Run(name, func(t *testing.T) {
			a, peer := established(t, Config{ARTIM: 5 * time.Second, MaxPDULength: 256, MaxCommandLength: 300})
			o, err := exchange(t, peer, readCommand(a), c.wire...)
			check(t, name, o, c.w)
			if !errors.Is(err, ErrProtocol) || errors.Is(err, ErrPDUTooLarge) != c.tooLong {
				t.Errorf("ReadCommand returned %v, want ErrProtocol (PDU too large: %v)", err, c.tooLong)
			}
		})
	}
	// Inside a data set: a command fragment, and a fragment on another context.
	for name, second := range map[string]pdu.PDV{
		"command inside a data set":   {ContextID: 1, Command: true, Last: true, Data: []byte{9}},
		"data set on another context": {ContextID: 3, Last: true, Data: []byte{9}},
	} {
		t.Run(name, func(t *testing.T) {
			a, peer := established(t, Config{ARTIM: 5 * time.Second})
			readDataSet := func() error {
				if _, _, err := a.ReadCommand(); err != nil {
					return err
				}
				_, err := io.ReadAll(a.DataReader(1))
				return err
			}
			o, err := exchange(t, peer, readDataSet,
				pdata(pdu.PDV{ContextID: 1, Command: true, Last: true, Data: []byte{1}}),
				pdata(pdu.PDV{ContextID: 1, Data: []byte{2}}, second))
			w := providerUnexpected
			if !second.Command {
				w = providerInvalid
			}
			check(t, name, o, w)
			wantErr(t, "data reader", err, ErrProtocol)
		})
	}
}

// requested returns an association this package requested (accepted by the raw peer).
func requested(t *testing.T) (*Association, net.Conn) {
	t.Helper()
	peer, done := requestOver(t)
	go peer.Write(rawPDUs()["A-ASSOCIATE-AC"])
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.a.Close(); peer.Close() })
	return r.a, peer
}

// Sta7 (requestor, A-RELEASE-RQ sent, waiting for A-RELEASE-RP).
func TestRequestorAwaitingReleaseRP(t *testing.T) {
	for name, c := range map[string]struct {
		answer  []string // PDUs the peer sends after reading the A-RELEASE-RQ
		wantErr error
	}{
		"A-RELEASE-RP":               {[]string{"A-RELEASE-RP"}, nil},
		"late P-DATA-TF, then RP":    {[]string{"P-DATA-TF", "A-RELEASE-RP"}, nil},
		"release collision, then RP": {[]string{"A-RELEASE-RQ", "A-RELEASE-RP"}, nil},
		"A-ABORT":                    {[]string{"A-ABORT"}, ErrPeerAborted},
		"A-ASSOCIATE-RQ":             {[]string{"A-ASSOCIATE-RQ"}, ErrProtocol},
		"A-ASSOCIATE-AC":             {[]string{"A-ASSOCIATE-AC"}, ErrProtocol},
		"A-ASSOCIATE-RJ":             {[]string{"A-ASSOCIATE-RJ"}, ErrProtocol},
		"unknown 0x09":               {[]string{"unknown 0x09"}, ErrProtocol},
	} {
		t.Run(name, func(t *testing.T) {
			a, peer := requested(t)
			done := make(chan error, 1)
			go func() { done <- a.Release() }()
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			if v, err := pdu.Read(peer, 64); err != nil {
				t.Fatal(err)
			} else if _, ok := v.(*pdu.ReleaseRQ); !ok {
				t.Fatalf("got %T, want A-RELEASE-RQ", v)
			}
			go func() {
				for _, n := range c.answer {
					if _, err := peer.Write(rawPDUs()[n]); err != nil {
						return
					}
				}
			}()
			o := observe(t, peer)
			if c.answer[0] == "A-RELEASE-RQ" {
				// The collision is answered with A-RELEASE-RP (PS3.8 9.2.3.2, requestor side).
				if _, ok := o.other.(*pdu.ReleaseRP); !ok {
					t.Errorf("release collision answered with %T, want A-RELEASE-RP", o.other)
				}
				o.other = nil
			}
			check(t, name, o, silentClose) // see the package doc: no A-ABORT while releasing
			wantErr(t, "Release", <-done, c.wantErr)
		})
	}
}

// A user abort: source service user, reason not specified (the reason is only significant for
// the provider), then the connection is closed.
func TestUserAbort(t *testing.T) {
	a, peer := requested(t)
	go a.Abort(pdu.AbortSourceServiceUser, pdu.AbortReasonNotSpecified)
	check(t, "user abort", observe(t, peer), userNotSpecified)
}
