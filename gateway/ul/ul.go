package ul

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"dpersona/gateway/pdu"
	"dpersona/internal/dicomstd"
)

// Config holds the limits and timeouts of one association.
type Config struct {
	// MaxPDULength is the largest P-DATA-TF body this side accepts; it is advertised to the peer.
	MaxPDULength uint32
	// MaxSendPDULength caps the PDUs sent, even when the peer accepts larger ones (0 = 1 MiB).
	MaxSendPDULength uint32
	// ARTIM bounds the wait for an A-ASSOCIATE-RQ/AC and for an A-RELEASE-RP.
	ARTIM time.Duration
	// RequestTimeout, when set, bounds the acceptor's wait for the A-ASSOCIATE-RQ instead of
	// ARTIM (the SCP's shorter deadline for connections not yet admitted).
	RequestTimeout time.Duration
	// ReadTimeout bounds the wait for each PDU while a message is being received.
	ReadTimeout time.Duration
	// IdleTimeout bounds the wait for the first PDU of the next message.
	IdleTimeout time.Duration
	// WriteTimeout bounds every write.
	WriteTimeout time.Duration
	// MaxCommandLength bounds a reassembled command set.
	MaxCommandLength int
}

// DefaultConfig returns the defaults used when a field is zero.
func DefaultConfig() Config {
	return Config{
		MaxPDULength:     256 * 1024,
		MaxSendPDULength: 1 << 20,
		ARTIM:            30 * time.Second,
		ReadTimeout:      60 * time.Second,
		IdleTimeout:      time.Minute, // an idle peer gives its association slot back after this
		WriteTimeout:     60 * time.Second,
		MaxCommandLength: 64 * 1024,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxPDULength == 0 {
		c.MaxPDULength = d.MaxPDULength
	}
	if c.MaxSendPDULength == 0 {
		c.MaxSendPDULength = d.MaxSendPDULength
	}
	if c.ARTIM == 0 {
		c.ARTIM = d.ARTIM
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.MaxCommandLength == 0 {
		c.MaxCommandLength = d.MaxCommandLength
	}
	return c
}

// maxAssociateLength bounds an A-ASSOCIATE-RQ/AC: 128 contexts with a dozen transfer syntaxes
// each fit easily.
const maxAssociateLength = 256 * 1024

// Errors reported by the receive side.
var (
	// ErrReleaseRequested: the peer sent A-RELEASE-RQ; answer with ReplyRelease.
	ErrReleaseRequested = errors.New("peer requested release")
	// ErrPeerAborted: the peer sent A-ABORT; the connection is closed.
	ErrPeerAborted = errors.New("peer aborted the association")
	// ErrProtocol wraps violations of PS3.8 by the peer; the association was aborted.
	ErrProtocol = errors.New("protocol violation")
	// ErrRejected wraps an A-ASSOCIATE-RJ (use errors.As with *pdu.AssociateRJ for details).
	ErrRejected = errors.New("association rejected")
	// ErrPDUTooLarge is wrapped (with ErrProtocol) when a P-DATA-TF exceeds the advertised
	// maximum, so that the limit can be counted apart from other violations.
	ErrPDUTooLarge = errors.New("PDU exceeds the maximum length")
)

// PresentationContext is a negotiated context.
type PresentationContext struct {
	ID             byte
	AbstractSyntax string
	TransferSyntax string
	Accepted       bool
	Result         byte
}

// Association is one established association. Reads and writes may run on different goroutines
// (one reader, one writer at a time).
type Association struct {
	conn net.Conn
	r    *bufio.Reader
	cfg  Config

	CallingAE, CalledAE string
	// PeerMaxPDULength is the peer's advertised receive limit (0 = unlimited).
	PeerMaxPDULength uint32
	// PeerImplementationClassUID and PeerImplementationVersion come from the peer's user info.
	PeerImplementationClassUID, PeerImplementationVersion string
	contexts                                              map[byte]*PresentationContext

	// Receive state: bytes left in the current P-DATA-TF and in the current PDV.
	pduLeft uint32
	pdvLeft uint32
	pdv     pdvHeader
	inPDV   bool

	wmu  sync.Mutex
	wbuf []byte

	closeOnce sync.Once
}

type pdvHeader struct {
	contextID byte
	command   bool
	last      bool
}

func newAssociation(conn net.Conn, cfg Config) *Association {
	return &Association{conn: conn, r: bufio.NewReaderSize(conn, 64*1024), cfg: cfg, contexts: map[byte]*PresentationContext{}}
}

// Conn returns the underlying connection.
func (a *Association) Conn() net.Conn { return a.conn }

// Context returns a negotiated presentation context.
func (a *Association) Context(id byte) (*PresentationContext, bool) {
	pc, ok := a.contexts[id]
	return pc, ok
}

// Contexts returns all negotiated presentation contexts (accepted and rejected).
func (a *Association) Contexts() []*PresentationContext {
	out := make([]*PresentationContext, 0, len(a.contexts))
	for id := 1; id < 256; id++ {
		if pc, ok := a.contexts[byte(id)]; ok {
			out = append(out, pc)
		}
	}
	return out
}

// readBody reads a whole non-P-DATA PDU body of bounded length.
func (a *Association) readBody(h pdu.Header, limit uint32) ([]byte, error) {
	if h.Length > limit {
		return nil, fmt.Errorf("%w: PDU type 0x%02x declares %d bytes, limit %d", ErrProtocol, h.Type, h.Length, limit)
	}
	b := make([]byte, h.Length)
	if _, err := io.ReadFull(a.r, b); err != nil {
		return nil, eofIsUnexpected(err)
	}
	return b, nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Negotiator decides on an A-ASSOCIATE-RQ at the acceptor: it returns either the answers for the
// presentation contexts (with user info filled in by Accept) or a rejection.
type Negotiator func(rq *pdu.AssociateRQ) ([]pdu.PresentationContextAC, *pdu.AssociateRJ)

// Accept runs the acceptor side of association establishment on a fresh connection: it waits at
// most ARTIM for the A-ASSOCIATE-RQ, asks decide, and answers with AC or RJ. On rejection the
// connection is closed and the returned error wraps ErrRejected and the *pdu.AssociateRJ; the
// decoded request is returned whenever one was read.
func Accept(conn net.Conn, cfg Config, decide Negotiator) (*Association, *pdu.AssociateRQ, error) {
	cfg = cfg.withDefaults()
	a := newAssociation(conn, cfg)
	wait := cfg.ARTIM
	if cfg.RequestTimeout > 0 {
		wait = cfg.RequestTimeout
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	h, err := pdu.ReadHeader(a.r)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("waiting for A-ASSOCIATE-RQ: %w", err)
	}
	if h.Type != pdu.TypeAssociateRQ {
		a.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonUnexpectedPDU)
		return nil, nil, fmt.Errorf("%w: PDU type 0x%02x where A-ASSOCIATE-RQ was expected", ErrProtocol, h.Type)
	}
	body, err := a.readBody(h, maxAssociateLength)
	if err != nil {
		a.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonInvalidParameterValue)
		return nil, nil, err
	}
	rq, err := pdu.DecodeAssociateRQ(body)
	if err != nil {
		a.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonInvalidParameterValue)
		return nil, nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if err := checkContextIDs(rq.PresentationContexts); err != nil {
		a.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonInvalidParameterValue)
		return nil, rq, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	a.CallingAE, a.CalledAE = rq.CallingAE, rq.CalledAE
	a.PeerMaxPDULength = rq.UserInfo.MaxPDULength
	a.PeerImplementationClassUID = rq.UserInfo.ImplementationClassUID
	a.PeerImplementationVersion = rq.UserInfo.ImplementationVersionName

	var answers []pdu.PresentationContextAC
	var rj *pdu.AssociateRJ
	switch {
	case rq.ProtocolVersion&1 == 0:
		rj = &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceServiceProviderACSE, Reason: pdu.RejectReasonProtocolVersionNotSupported}
	case rq.ApplicationContext != pdu.ApplicationContextName:
		rj = &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceServiceUser, Reason: pdu.RejectReasonApplicationContextNotSupported}
	default:
		answers, rj = decide(rq)
	}
	if rj != nil {
		a.writeRaw(rj.Encode(), cfg.ARTIM)
		a.Close()
		return nil, rq, fmt.Errorf("%w: %w", ErrRejected, rj)
	}
	proposed := map[byte]string{}
	for _, pc := range rq.PresentationContexts {
		proposed[pc.ID] = pc.AbstractSyntax
	}
	for _, ans := range answers {
		a.contexts[ans.ID] = &PresentationContext{ID: ans.ID, AbstractSyntax: proposed[ans.ID], TransferSyntax: ans.TransferSyntax, Accepted: ans.Result == pdu.ResultAcceptance, Result: ans.Result}
	}
	ac := &pdu.AssociateAC{
		ProtocolVersion:      1,
		CalledAE:             rq.CalledAE,
		CallingAE:            rq.CallingAE,
		ApplicationContext:   pdu.ApplicationContextName,
		PresentationContexts: answers,
		UserInfo: pdu.UserInfo{
			MaxPDULength:              cfg.MaxPDULength,
			ImplementationClassUID:    dicomstd.ImplementationClassUID,
			ImplementationVersionName: dicomstd.ImplementationVersionName,
		},
	}
	if err := a.writeRaw(ac.Encode(), cfg.WriteTimeout); err != nil {
		a.Close()
		return nil, rq, fmt.Errorf("sending A-ASSOCIATE-AC: %w", err)
	}
	return a, rq, nil
}

// checkContextIDs enforces PS3.8 9.3.2.2: presentation context IDs are odd integers 1-255,
// unique within the A-ASSOCIATE-RQ. (Answers are matched to proposals by ID, so an even or a
// repeated ID would make the negotiation ambiguous.)
func checkContextIDs(pcs []pdu.PresentationContextRQ) error {
	var seen [256]bool
	for _, pc := range pcs {
		if pc.ID%2 == 0 {
			return fmt.Errorf("presentation context ID %d is even (PS3.8 9.3.2.2: odd, 1-255)", pc.ID)
		}
		if seen[pc.ID] {
			return fmt.Errorf("presentation context ID %d proposed twice (PS3.8 9.3.2.2: unique)", pc.ID)
		}
		seen[pc.ID] = true
	}
	return nil
}

// Request runs the requestor side on a fresh connection: sends rq (user info defaults filled in)
// and waits at most ARTIM for the answer.
func Request(conn net.Conn, cfg Config, rq *pdu.AssociateRQ) (*Association, error) {
	cfg = cfg.withDefaults()
	a := newAssociation(conn, cfg)
	a.CallingAE, a.CalledAE = rq.CallingAE, rq.CalledAE
	if rq.UserInfo.MaxPDULength == 0 {
		rq.UserInfo.MaxPDULength = cfg.MaxPDULength
	}
	if rq.UserInfo.ImplementationClassUID == "" {
		rq.UserInfo.ImplementationClassUID = dicomstd.ImplementationClassUID
		rq.UserInfo.ImplementationVersionName = dicomstd.ImplementationVersionName
	}
	if err := a.writeRaw(rq.Encode(), cfg.ARTIM); err != nil {
		a.Close()
		return nil, fmt.Errorf("sending A-ASSOCIATE-RQ: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(cfg.ARTIM))
	h, err := pdu.ReadHeader(a.r)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("waiting for A-ASSOCIATE-AC: %w", err)
	}
	body, err := a.readBody(h, maxAssociateLength)
	if err != nil {
		a.Abort(pdu.AbortSourceServiceUser, pdu.AbortReasonNotSpecified)
		return nil, err
	}
	switch h.Type {
	case pdu.TypeAssociateAC:
	case pdu.TypeAssociateRJ, pdu.TypeAbort:
		a.Close()
		v, err := pdu.Decode(h.Type, body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if rj, ok := v.(*pdu.AssociateRJ); ok {
			return nil, fmt.Errorf("%w: %w", ErrRejected, *rj)
		}
		return nil, fmt.Errorf("%w while establishing the association", ErrPeerAborted)
	default:
		a.Abort(pdu.AbortSourceServiceUser, pdu.AbortReasonUnexpectedPDU)
		return nil, fmt.Errorf("%w: PDU type 0x%02x in answer to A-ASSOCIATE-RQ", ErrProtocol, h.Type)
	}
	ac, err := pdu.DecodeAssociateAC(body)
	if err != nil {
		a.Abort(pdu.AbortSourceServiceUser, pdu.AbortReasonInvalidParameterValue)
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	a.PeerMaxPDULength = ac.UserInfo.MaxPDULength
	a.PeerImplementationClassUID = ac.UserInfo.ImplementationClassUID
	a.PeerImplementationVersion = ac.UserInfo.ImplementationVersionName
	proposed := map[byte]pdu.PresentationContextRQ{}
	for _, pc := range rq.PresentationContexts {
		proposed[pc.ID] = pc
	}
	for _, ans := range ac.PresentationContexts {
		p, ok := proposed[ans.ID]
		if !ok {
			continue // an answer to a context that was never proposed is ignored
		}
		accepted := ans.Result == pdu.ResultAcceptance
		if accepted && !contains(p.TransferSyntaxes, ans.TransferSyntax) {
			a.Abort(pdu.AbortSourceServiceUser, pdu.AbortReasonInvalidParameterValue)
			return nil, fmt.Errorf("%w: peer accepted context %d with transfer syntax %s, which was not proposed", ErrProtocol, ans.ID, ans.TransferSyntax)
		}
		a.contexts[ans.ID] = &PresentationContext{ID: ans.ID, AbstractSyntax: p.AbstractSyntax, TransferSyntax: ans.TransferSyntax, Accepted: accepted, Result: ans.Result}
	}
	return a, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// writeRaw writes one encoded PDU under the write lock.
func (a *Association) writeRaw(b []byte, timeout time.Duration) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := a.conn.Write(b)
	return err
}

// Abort sends A-ABORT (best effort, short deadline) and closes the connection.
func (a *Association) Abort(source pdu.AbortSource, reason pdu.AbortReason) {
	a.writeRaw((&pdu.Abort{Source: source, Reason: reason}).Encode(), 2*time.Second)
	a.Close()
}

// Close closes the connection without any PDU.
func (a *Association) Close() error {
	var err error
	a.closeOnce.Do(func() { err = a.conn.Close() })
	return err
}

// ReplyRelease answers an A-RELEASE-RQ with A-RELEASE-RP and closes the connection.
func (a *Association) ReplyRelease() error {
	err := a.writeRaw(pdu.ReleaseRP{}.Encode(), a.cfg.WriteTimeout)
	// Give the peer the chance to close first (it is the one that requested), within ARTIM.
	a.conn.SetReadDeadline(time.Now().Add(min(a.cfg.ARTIM, 2*time.Second)))
	io.Copy(io.Discard, io.LimitReader(a.r, 1<<16))
	a.Close()
	return err
}

// Release sends A-RELEASE-RQ and waits (ARTIM) for A-RELEASE-RP, then closes.
func (a *Association) Release() error {
	defer a.Close()
	if err := a.writeRaw(pdu.ReleaseRQ{}.Encode(), a.cfg.WriteTimeout); err != nil {
		return fmt.Errorf("sending A-RELEASE-RQ: %w", err)
	}
	deadline := time.Now().Add(a.cfg.ARTIM)
	for {
		a.conn.SetReadDeadline(deadline)
		h, err := pdu.ReadHeader(a.r)
		if err != nil {
			return fmt.Errorf("waiting for A-RELEASE-RP: %w", err)
		}
		switch h.Type {
		case pdu.TypeReleaseRP:
			_, err := a.readBody(h, 64)
			return err
		case pdu.TypeReleaseRQ:
			// Release collision (PS3.8 9.2.3.2): as requestor, answer and keep waiting.
			if _, err := a.readBody(h, 64); err != nil {
				return err
			}
			a.writeRaw(pdu.ReleaseRP{}.Encode(), a.cfg.WriteTimeout)
		case pdu.TypeAbort:
			return ErrPeerAborted
		case pdu.TypePDataTF:
			// Late data (e.g. a response we no longer wait for): skip it.
			if _, err := io.CopyN(io.Discard, a.r, int64(h.Length)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: PDU type 0x%02x while waiting for A-RELEASE-RP", ErrProtocol, h.Type)
		}
	}
}

// protocolError aborts the association and returns an error wrapping ErrProtocol.
func (a *Association) protocolError(reason pdu.AbortReason, format string, args ...any) error {
	a.Abort(pdu.AbortSourceServiceProvider, reason)
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// nextPDV positions the reader at the payload of the next PDV, reading PDU headers as needed.
// idle selects the idle timeout (waiting for a new message) instead of the read timeout.
func (a *Association) nextPDV(idle bool) error {
	for a.pduLeft == 0 {
		timeout := a.cfg.ReadTimeout
		if idle {
			timeout = a.cfg.IdleTimeout
		}
		a.conn.SetReadDeadline(time.Now().Add(timeout))
		h, err := pdu.ReadHeader(a.r)
		if err != nil {
			a.Close()
			return eofIsUnexpected(err)
		}
		switch h.Type {
		case pdu.TypePDataTF:
			if h.Length > a.cfg.MaxPDULength {
				a.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonInvalidParameterValue)
				return fmt.Errorf("%w: %w: P-DATA-TF of %d bytes, the negotiated maximum is %d", ErrProtocol, ErrPDUTooLarge, h.Length, a.cfg.MaxPDULength)
			}
			if h.Length < 6 {
				return a.protocolError(pdu.AbortReasonInvalidParameterValue, "P-DATA-TF of %d bytes cannot hold a PDV", h.Length)
			}
			a.pduLeft = h.Length
		case pdu.TypeReleaseRQ:
			if _, err := a.readBody(h, 64); err != nil {
				a.Close()
				return err
			}
			if !idle {
				return a.protocolError(pdu.AbortReasonUnexpectedPDU, "A-RELEASE-RQ in the middle of a message")
			}
			return ErrReleaseRequested
		case pdu.TypeAbort:
			a.Close()
			return ErrPeerAborted
		case pdu.TypeAssociateRQ, pdu.TypeAssociateAC, pdu.TypeAssociateRJ, pdu.TypeReleaseRP:
			return a.protocolError(pdu.AbortReasonUnexpectedPDU, "unexpected PDU type 0x%02x on an established association", h.Type)
		default:
			return a.protocolError(pdu.AbortReasonUnrecognizedPDU, "unrecognized PDU type 0x%02x", h.Type)
		}
	}
	if a.pduLeft < 6 {
		return a.protocolError(pdu.AbortReasonInvalidParameterValue, "%d bytes left in a P-DATA-TF cannot hold a PDV header", a.pduLeft)
	}
	var hb [6]byte
	a.conn.SetReadDeadline(time.Now().Add(a.cfg.ReadTimeout))
	if _, err := io.ReadFull(a.r, hb[:]); err != nil {
		a.Close()
		return eofIsUnexpected(err)
	}
	n := binary.BigEndian.Uint32(hb[:4])
	if n < 2 || n > a.pduLeft-4 {
		return a.protocolError(pdu.AbortReasonInvalidParameterValue, "PDV item length %d does not fit the %d bytes left in its P-DATA-TF", n, a.pduLeft-4)
	}
	a.pduLeft -= 4 + n
	a.pdvLeft = n - 2
	a.pdv = pdvHeader{contextID: hb[4], command: hb[5]&pdu.PDVCommand != 0, last: hb[5]&pdu.PDVLast != 0}
	if hb[5]&^(pdu.PDVCommand|pdu.PDVLast) != 0 {
		return a.protocolError(pdu.AbortReasonInvalidParameterValue, "PDV message control header 0x%02x has reserved bits set", hb[5])
	}
	if _, ok := a.contexts[a.pdv.contextID]; !ok || !a.contexts[a.pdv.contextID].Accepted {
		return a.protocolError(pdu.AbortReasonInvalidParameterValue, "PDV on presentation context %d, which was not accepted", a.pdv.contextID)
	}
	a.inPDV = true
	return nil
}

// ReadCommand reads the next command set (all its fragments), waiting at most IdleTimeout for the
// message to start. It returns ErrReleaseRequested when the peer asks to release instead.
func (a *Association) ReadCommand() (contextID byte, command []byte, err error) {
	if a.inPDV && !a.pdv.command {
		// The previous data set was not read to its end: the caller broke the message sequence.
		return 0, nil, a.protocolError(pdu.AbortReasonUnexpectedPDU, "command expected while a data set is still being received")
	}
	var buf []byte
	first := true
	for {
		if err := a.nextPDV(first && a.pduLeft == 0); err != nil {
			return 0, nil, err
		}
		if !a.pdv.command {
			return 0, nil, a.protocolError(pdu.AbortReasonUnexpectedPDU, "data set fragment where a command was expected (context %d)", a.pdv.contextID)
		}
		if !first && a.pdv.contextID != contextID {
			return 0, nil, a.protocolError(pdu.AbortReasonInvalidParameterValue, "command fragments on contexts %d and %d", contextID, a.pdv.contextID)
		}
		contextID = a.pdv.contextID
		first = false
		if len(buf)+int(a.pdvLeft) > a.cfg.MaxCommandLength {
			return 0, nil, a.protocolError(pdu.AbortReasonInvalidParameterValue, "command set longer than %d bytes", a.cfg.MaxCommandLength)
		}
		start := len(buf)
		buf = append(buf, make([]byte, a.pdvLeft)...)
		a.conn.SetReadDeadline(time.Now().Add(a.cfg.ReadTimeout))
		if _, err := io.ReadFull(a.r, buf[start:]); err != nil {
			a.Close()
			return 0, nil, eofIsUnexpected(err)
		}
		a.pdvLeft = 0
		a.inPDV = false
		if a.pdv.last {
			return contextID, buf, nil
		}
	}
}

// DataReader returns a reader over the data set that follows a command on the given context. It
// reads PDV payloads straight from the connection as they arrive and returns io.EOF after the
// last fragment; a command fragment or another context in between is a protocol error. The data
// set must be read to io.EOF before the next ReadCommand.
func (a *Association) DataReader(contextID byte) io.Reader {
	return &dataReader{a: a, contextID: contextID}
}

type dataReader struct {
	a         *Association
	contextID byte
	started   bool
	done      bool
	err       error
}

func (d *dataReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.done {
		return 0, io.EOF
	}
	a := d.a
	for !a.inPDV || a.pdvLeft == 0 {
		if a.inPDV && a.pdvLeft == 0 {
			a.inPDV = false
			if a.pdv.last {
				d.done = true
				return 0, io.EOF
			}
		}
		if err := a.nextPDV(false); err != nil {
			d.err = err
			return 0, err
		}
		if a.pdv.command {
			d.err = a.protocolError(pdu.AbortReasonUnexpectedPDU, "command fragment inside the data set on context %d", d.contextID)
			return 0, d.err
		}
		if a.pdv.contextID != d.contextID {
			d.err = a.protocolError(pdu.AbortReasonInvalidParameterValue, "data set fragment on context %d, its command was on %d", a.pdv.contextID, d.contextID)
			return 0, d.err
		}
		d.started = true
	}
	if uint32(len(p)) > a.pdvLeft {
		p = p[:a.pdvLeft]
	}
	a.conn.SetReadDeadline(time.Now().Add(a.cfg.ReadTimeout))
	n, err := a.r.Read(p)
	a.pdvLeft -= uint32(n)
	if err != nil {
		a.Close()
		d.err = eofIsUnexpected(err)
		return n, d.err
	}
	if a.pdvLeft == 0 && a.pdv.last {
		a.inPDV = false
		d.done = true
	}
	return n, nil
}

// sendPayloadMax is the largest PDV payload that fits the peer's and our own send limit.
func (a *Association) sendPayloadMax() int {
	limit := a.cfg.MaxSendPDULength
	if a.PeerMaxPDULength != 0 && a.PeerMaxPDULength < limit {
		limit = a.PeerMaxPDULength
	}
	if limit < 6+64 {
		limit = 6 + 64 // the standard's smallest sensible PDU still carries data
	}
	return int(limit) - 6
}

// WriteCommand sends a command set on a context, fragmented to the peer's limit.
func (a *Association) WriteCommand(contextID byte, command []byte) error {
	return a.writeMessagePart(contextID, true, bytes.NewReader(command), int64(len(command)))
}

// WriteData sends a data set of the given size read from r, fragmented to the peer's limit.
func (a *Association) WriteData(contextID byte, r io.Reader, size int64) error {
	return a.writeMessagePart(contextID, false, r, size)
}

// writeMessagePart sends size bytes from r as PDVs of one message part (command or data set),
// one PDV per P-DATA-TF, the last one flagged.
func (a *Association) writeMessagePart(contextID byte, command bool, r io.Reader, size int64) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	max := a.sendPayloadMax()
	if need := 12 + max; cap(a.wbuf) < need {
		a.wbuf = make([]byte, need)
	}
	buf := a.wbuf[:cap(a.wbuf)]
	left := size
	for {
		n := int64(max)
		if left < n {
			n = left
		}
		if _, err := io.ReadFull(r, buf[12:12+n]); err != nil {
			return fmt.Errorf("reading message payload: %w", eofIsUnexpected(err))
		}
		left -= n
		pdu.PutHeader(buf, pdu.TypePDataTF, uint32(6+n))
		binary.BigEndian.PutUint32(buf[6:], uint32(2+n))
		buf[10] = contextID
		var ctl byte
		if command {
			ctl |= pdu.PDVCommand
		}
		if left == 0 {
			ctl |= pdu.PDVLast
		}
		buf[11] = ctl
		a.conn.SetWriteDeadline(time.Now().Add(a.cfg.WriteTimeout))
		if _, err := a.conn.Write(buf[:12+n]); err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
	}
}
