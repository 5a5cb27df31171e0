// Package scu is a DICOM client (service class user) on the same upper layer as the gateway's SCP:
// Dial negotiates an association, Echo sends C-ECHO, Store sends Part-10 files (or a data set
// from any reader) with C-STORE, Release and Abort end the association.
//
//	props, err := scu.ProposalsForFiles(files)
//	c, err := scu.Dial(ctx, "pacs:104", scu.Options{CallingAE: "DPERSONA", CalledAE: "PACS"}, props)
//	res, err := c.StoreFile(ctx, files[0])
//	err = c.Release()
package scu

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"dpersona/gateway/dimse"
	"dpersona/gateway/part10"
	"dpersona/gateway/pdu"
	"dpersona/gateway/ul"
	"dpersona/internal/dicomstd"
)

// Options configure an association.
type Options struct {
	CallingAE, CalledAE string
	// DialTimeout bounds the TCP connect (default 10s); the association negotiation is bounded
	// by UL.ARTIM.
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for each DIMSE response (default 60s).
	ResponseTimeout time.Duration
	UL              ul.Config
	// TLS, when set, runs the association over TLS (DICOM TLS, e.g. from ClientTLSConfig); the
	// handshake is bounded by UL.ARTIM.
	TLS *tls.Config
}

// ClientTLSConfig builds a TLS 1.2+ client configuration: the server's certificate is verified
// against the CAs in caFile (the system roots when empty) for serverName (the host of the address
// when empty); certFile and keyFile, when set, are the client certificate a server that verifies
// clients asks for.
func ClientTLSConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: dicomstd.TLSMinVersion, CipherSuites: dicomstd.TLSCipherSuites, ServerName: serverName}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("scu: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("scu: CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("scu: a TLS client certificate needs both the certificate and the key file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("scu: TLS client certificate %s / key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Proposal is one presentation context to propose.
type Proposal struct {
	AbstractSyntax   string
	TransferSyntaxes []string
}

// VerificationProposal proposes only the Verification SOP class (for Echo).
func VerificationProposal() []Proposal {
	return []Proposal{{AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{part10.ExplicitVRLittleEndian, part10.ImplicitVRLittleEndian}}}
}

// maxContexts is the most presentation contexts an association can carry (odd IDs 1..255).
const maxContexts = 128

// ProposalsForFiles reads the meta group of each file and proposes, per SOP class, the transfer
// syntaxes the files are encoded in (this client does not convert encodings), one context per
// pair. The Verification class is always included.
func ProposalsForFiles(paths []string) ([]Proposal, error) {
	byClass := map[string]map[string]bool{}
	for _, p := range paths {
		m, err := ReadMeta(p)
		if err != nil {
			return nil, err
		}
		if byClass[m.MediaStorageSOPClassUID] == nil {
			byClass[m.MediaStorageSOPClassUID] = map[string]bool{}
		}
		byClass[m.MediaStorageSOPClassUID][m.TransferSyntaxUID] = true
	}
	classes := make([]string, 0, len(byClass))
	for c := range byClass {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	props := VerificationProposal()
	for _, c := range classes {
		var ts []string
		for t := range byClass[c] {
			ts = append(ts, t)
		}
		sort.Strings(ts)
		// One context per transfer syntax: each file must find a context accepted with its own.
		for _, t := range ts {
			props = append(props, Proposal{AbstractSyntax: c, TransferSyntaxes: []string{t}})
		}
	}
	if len(props) > maxContexts {
		return nil, fmt.Errorf("the files need %d presentation contexts, an association holds at most %d: send them in smaller groups", len(props), maxContexts)
	}
	return props, nil
}

// ReadMeta reads the meta group of a Part-10 file.
func ReadMeta(path string) (part10.Meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return part10.Meta{}, err
	}
	defer f.Close()
	m, _, err := part10.ReadMeta(bufio.NewReaderSize(f, 4096))
	if err != nil {
		return m, fmt.Errorf("%s: %w", path, err)
	}
	if m.MediaStorageSOPClassUID == "" || m.MediaStorageSOPInstanceUID == "" {
		return m, fmt.Errorf("%s: file meta group lacks the media storage SOP class or instance UID", path)
	}
	return m, nil
}

// ErrNoContext means no accepted presentation context fits an instance; the association itself
// is still usable.
var ErrNoContext = errors.New("no accepted presentation context")

// Client is one established association.
type Client struct {
	assoc           *ul.Association
	opt             Options
	msgID           uint16
	responseTimeout time.Duration
}

// Dial connects to addr (host:port) and negotiates an association proposing the given contexts.
// An A-ASSOCIATE-RJ comes back as an error wrapping ul.ErrRejected and a pdu.AssociateRJ.
func Dial(ctx context.Context, addr string, opt Options, proposals []Proposal) (*Client, error) {
	if opt.CallingAE == "" || opt.CalledAE == "" {
		return nil, errors.New("scu: calling and called AE titles are required")
	}
	for _, ae := range []string{opt.CallingAE, opt.CalledAE} {
		if err := dicomstd.CheckAETitle(ae); err != nil {
			return nil, fmt.Errorf("scu: AE title: %w", err)
		}
	}
	if len(proposals) == 0 {
		return nil, errors.New("scu: no presentation context to propose")
	}
	if len(proposals) > maxContexts {
		return nil, fmt.Errorf("scu: %d presentation contexts proposed, at most %d fit an association", len(proposals), maxContexts)
	}
	if opt.DialTimeout <= 0 {
		opt.DialTimeout = 10 * time.Second
	}
	if opt.ResponseTimeout <= 0 {
		opt.ResponseTimeout = 60 * time.Second
	}
	if opt.UL.ARTIM == 0 {
		opt.UL.ARTIM = 30 * time.Second
	}
	// The requestor waits for responses, not for new requests: its idle wait is the response wait.
	opt.UL.IdleTimeout = opt.ResponseTimeout
	d := net.Dialer{Timeout: opt.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("scu: connect to %s: %w", addr, err)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetNoDelay(true)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if opt.TLS != nil {
		cfg := opt.TLS
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tconn := tls.Client(conn, cfg)
		hctx, cancel := context.WithTimeout(ctx, opt.UL.ARTIM)
		err := tconn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("scu: TLS handshake with %s: %w", addr, err)
		}
		conn = tconn
	}
	rq := &pdu.AssociateRQ{CalledAE: opt.CalledAE, CallingAE: opt.CallingAE, ApplicationContext: pdu.ApplicationContextName}
	for i, p := range proposals {
		rq.PresentationContexts = append(rq.PresentationContexts, pdu.PresentationContextRQ{ID: byte(2*i + 1), AbstractSyntax: p.AbstractSyntax, TransferSyntaxes: p.TransferSyntaxes})
	}
	assoc, err := ul.Request(conn, opt.UL, rq)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("scu: associate with %s@%s: %w", opt.CalledAE, addr, ctx.Err())
		}
		return nil, fmt.Errorf("scu: associate with %s@%s: %w", opt.CalledAE, addr, err)
	}
	return &Client{assoc: assoc, opt: opt, responseTimeout: opt.ResponseTimeout}, nil
}

// Association exposes the negotiated association (contexts, peer limits).
func (c *Client) Association() *ul.Association { return c.assoc }

// findContext returns an accepted context for the abstract syntax and transfer syntax ("" = any).
func (c *Client) findContext(abstract, ts string) (*ul.PresentationContext, error) {
	var rejected []string
	for _, pc := range c.assoc.Contexts() {
		if pc.AbstractSyntax != abstract {
			continue
		}
		if pc.Accepted && (ts == "" || pc.TransferSyntax == ts) {
			return pc, nil
		}
		if !pc.Accepted {
			rejected = append(rejected, resultText(pc.Result))
		}
	}
	if len(rejected) > 0 {
		return nil, fmt.Errorf("%w: peer did not accept SOP class %s with transfer syntax %s (%s)", ErrNoContext, abstract, ts, strings.Join(rejected, ", "))
	}
	return nil, fmt.Errorf("%w: none was proposed for SOP class %s with transfer syntax %s", ErrNoContext, abstract, ts)
}

func resultText(r byte) string {
	switch r {
	case pdu.ResultUserRejection:
		return "user rejection"
	case pdu.ResultNoReason:
		return "no reason"
	case pdu.ResultAbstractSyntaxNotSupported:
		return "abstract syntax not supported"
	case pdu.ResultTransferSyntaxesNotSupported:
		return "transfer syntaxes not supported"
	}
	return fmt.Sprintf("result %d", r)
}

func (c *Client) nextID() uint16 {
	c.msgID++
	if c.msgID == 0 {
		c.msgID = 1
	}
	return c.msgID
}

// guard makes ctx cancellation interrupt blocking I/O; the association is unusable afterwards.
func (c *Client) guard(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { c.assoc.Conn().SetDeadline(time.Unix(1, 0)) })
}

// readResponse reads the response to msgID.
func (c *Client) readResponse(ctx context.Context, msgID uint16, field uint16) (*dimse.Command, error) {
	pcID, raw, err := c.assoc.ReadCommand()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("waiting for the response: %w", err)
	}
	rsp, err := dimse.Decode(raw)
	if err != nil {
		c.assoc.Abort(pdu.AbortSourceServiceUser, pdu.AbortReasonInvalidParameterValue)
		return nil, err
	}
	if rsp.HasDataSet() {
		if _, err := io.Copy(io.Discard, c.assoc.DataReader(pcID)); err != nil {
			return nil, err
		}
	}
	if rsp.CommandField != field || rsp.MessageIDBeingRespondedTo != msgID {
		c.assoc.Abort(pdu.AbortSourceServiceUser, pdu.AbortReasonUnexpectedParameter)
		return nil, fmt.Errorf("%w: got command 0x%04x for message %d, want 0x%04x for %d", ul.ErrProtocol, rsp.CommandField, rsp.MessageIDBeingRespondedTo, field, msgID)
	}
	return rsp, nil
}

// Echo sends C-ECHO and checks for success.
func (c *Client) Echo(ctx context.Context) error {
	defer c.guard(ctx)()
	pc, err := c.findContext(dimse.VerificationSOPClass, "")
	if err != nil {
		return err
	}
	id := c.nextID()
	rq := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: id, AffectedSOPClassUID: dimse.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
	if err := c.assoc.WriteCommand(pc.ID, rq.Encode()); err != nil {
		return fmt.Errorf("sending C-ECHO-RQ: %w", err)
	}
	rsp, err := c.readResponse(ctx, id, dimse.CEchoRSP)
	if err != nil {
		return err
	}
	if rsp.Status != dimse.StatusSuccess {
		return &StatusError{Op: "C-ECHO", Status: rsp.Status, Comment: rsp.ErrorComment}
	}
	return nil
}

// StatusError is a DIMSE failure status from the peer.
type StatusError struct {
	Op             string
	SOPInstanceUID string
	Status         dimse.Status
	Comment        string
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s failed with status 0x%04X (%s)", e.Op, e.Status, e.Status.Text())
	if e.SOPInstanceUID != "" {
		s = fmt.Sprintf("%s of %s failed with status 0x%04X (%s)", e.Op, e.SOPInstanceUID, e.Status, e.Status.Text())
	}
	if e.Comment != "" {
		s += ": " + e.Comment
	}
	return s
}

// StoreResult is the outcome of one C-STORE.
type StoreResult struct {
	SOPInstanceUID string
	Status         dimse.Status // success or a warning (0xB...); failures come as *StatusError
	Bytes          int64        // data set bytes sent
}

// StoreFile sends one Part-10 file on a context accepted for its SOP class and transfer syntax.
func (c *Client) StoreFile(ctx context.Context, path string) (StoreResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return StoreResult{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return StoreResult{}, err
	}
	br := bufio.NewReaderSize(f, 64*1024)
	m, off, err := part10.ReadMeta(br)
	if err != nil {
		return StoreResult{}, fmt.Errorf("%s: %w", path, err)
	}
	if m.MediaStorageSOPClassUID == "" || m.MediaStorageSOPInstanceUID == "" {
		return StoreResult{}, fmt.Errorf("%s: file meta group lacks the media storage SOP class or instance UID", path)
	}
	return c.Store(ctx, m.MediaStorageSOPClassUID, m.MediaStorageSOPInstanceUID, m.TransferSyntaxUID, br, st.Size()-off)
}

// Store sends a data set (encoded in transferSyntax, without the Part-10 header) of size bytes.
func (c *Client) Store(ctx context.Context, sopClass, sopInstance, transferSyntax string, data io.Reader, size int64) (StoreResult, error) {
	defer c.guard(ctx)()
	pc, err := c.findContext(sopClass, transferSyntax)
	if err != nil {
		return StoreResult{}, fmt.Errorf("instance %s: %w", sopInstance, err)
	}
	id := c.nextID()
	rq := &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: id, AffectedSOPClassUID: sopClass, AffectedSOPInstanceUID: sopInstance, CommandDataSetType: dimse.DataSetPresent}
	if err := c.assoc.WriteCommand(pc.ID, rq.Encode()); err != nil {
		return StoreResult{}, fmt.Errorf("sending C-STORE-RQ: %w", err)
	}
	if err := c.assoc.WriteData(pc.ID, data, size); err != nil {
		if ctx.Err() != nil {
			return StoreResult{}, ctx.Err()
		}
		return StoreResult{}, fmt.Errorf("sending the data set of %s: %w", sopInstance, err)
	}
	rsp, err := c.readResponse(ctx, id, dimse.CStoreRSP)
	if err != nil {
		return StoreResult{}, err
	}
	if !rsp.Status.IsSuccessOrWarning() {
		return StoreResult{SOPInstanceUID: sopInstance, Status: rsp.Status}, &StatusError{Op: "C-STORE", SOPInstanceUID: sopInstance, Status: rsp.Status, Comment: rsp.ErrorComment}
	}
	return StoreResult{SOPInstanceUID: sopInstance, Status: rsp.Status, Bytes: size}, nil
}

// Release ends the association in order.
func (c *Client) Release() error { return c.assoc.Release() }

// Abort ends the association at once.
func (c *Client) Abort() { c.assoc.Abort(pdu.AbortSourceServiceUser, pdu.AbortReasonNotSpecified) }
