// Package gateway is the DICOM network face of dpersona: a storage SCP (C-ECHO, C-STORE) with an
// association policy, a durable instance store (gateway/store) and study assembly
// (gateway/assembly). The upper layer (gateway/ul), PDUs (gateway/pdu) and DIMSE command sets
// (gateway/dimse) are shared with the SCU client (gateway/scu).
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"dpersona/gateway/assembly"
	"dpersona/gateway/dimse"
	"dpersona/gateway/pdu"
	"dpersona/gateway/store"
	"dpersona/gateway/ul"
	"dpersona/internal/dicomstd"
	"dpersona/internal/obs"
)

// The gateway -> bus contract (docs/architecture.md) names these types in package gateway.
type (
	StudySink       = assembly.StudySink
	StudySinkFunc   = assembly.StudySinkFunc
	CompletedStudy  = assembly.CompletedStudy
	CompletedSeries = assembly.CompletedSeries
	StoredInstance  = assembly.StoredInstance
)

// Config configures a Server.
type Config struct {
	Policy
	// MaxAssociations bounds concurrent associations; more are rejected as transient
	// (presentation provider, local limit exceeded). Default 32. A connection takes a slot only
	// once it has been admitted: its host is on the allow-list, its TLS handshake (on a TLS
	// listener) succeeded and its A-ASSOCIATE-RQ passed the policy. Before that it is pending.
	MaxAssociations int
	// MaxPendingPerHost bounds the pending connections (not yet admitted) from one IP address;
	// further ones are closed at once, so one host cannot starve the others. Default
	// MaxAssociations, at least MinPendingPerHost: a PACS that opens all its parallel
	// associations at the same instant is never refused for it.
	MaxPendingPerHost int
	// UL holds the upper-layer limits and timeouts (max PDU, ARTIM, read, idle, write).
	UL ul.Config
	// MinFreeBytes: while the data directory's file system has less free space, new
	// associations are rejected (A-ASSOCIATE-RJ transient, local limit exceeded) and C-STOREs on
	// open ones get "out of resources" (0xA700), so a filling disk fails cleanly before writes do.
	MinFreeBytes uint64
	// MaxInstanceBytes refuses a C-STORE data set longer than this with "out of resources"
	// (0xA700): the rest of the data set is read and dropped, nothing is stored. 0 = no limit.
	MaxInstanceBytes int64
	// PendingTimeout bounds the time from TCP accept to a complete A-ASSOCIATE-RQ, TLS handshake
	// included: a pending connection that says nothing is closed after it. Default
	// DefaultPendingTimeout (and never more than ARTIM).
	PendingTimeout time.Duration
	Logger         *slog.Logger
}

// Defaults for the admission of new connections (Config.MaxPendingPerHost, PendingTimeout).
const (
	MinPendingPerHost     = 8
	DefaultPendingTimeout = 10 * time.Second
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("gateway: server closed")

// Server is the storage SCP. Create it with NewServer, run Serve, stop with Shutdown.
type Server struct {
	cfg   Config
	store *store.Store
	asm   *assembly.Assembler
	log   *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*connState]struct{}
	closing   atomic.Bool
	handlers  sync.WaitGroup
	active    atomic.Int64 // admitted associations: the slots taken of MaxAssociations
	// pending counts the connections not yet admitted, per remote IP and in all.
	pending      map[string]int
	pendingTotal int

	stored   atomic.Int64
	failed   atomic.Int64
	received atomic.Int64 // bytes of acknowledged instances
}

type connState struct {
	conn    net.Conn // the TCP connection (closed to end the association before it is established)
	tls     *tls.Config
	host    string // the remote IP address
	pending bool   // not yet admitted: counted in Server.pending
	slot    bool   // admitted: holds one of MaxAssociations
	assoc   *ul.Association
	busy    bool // inside a DIMSE operation: Shutdown waits for it
}

// remoteHost is the IP address of a connection's peer (the whole address when it has no port).
func remoteHost(a net.Addr) string {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// maxPendingTotal bounds pending connections from all hosts together: enough for every slot to be
// refilled several times over and for several hosts at their per-host cap, few enough that a
// distributed flood costs little memory.
func (s *Server) maxPendingTotal() int {
	return 4*max(s.cfg.MaxAssociations, s.cfg.MaxPendingPerHost) + 16
}

// admitted ends a connection's pending state (it was admitted, refused or closed).
func (s *Server) admitted(cs *connState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !cs.pending {
		return
	}
	cs.pending = false
	s.pendingTotal--
	if s.pending[cs.host]--; s.pending[cs.host] <= 0 {
		delete(s.pending, cs.host)
	}
}

// takeSlot takes one of MaxAssociations for an admitted connection; false when all are taken.
func (s *Server) takeSlot(cs *connState) bool {
	if s.active.Add(1) > int64(s.cfg.MaxAssociations) {
		s.active.Add(-1)
		return false
	}
	cs.slot = true
	return true
}

// NewServer checks the configuration. asm may be nil (instances are then stored but not
// assembled, e.g. in tools).
func NewServer(cfg Config, st *store.Store, asm *assembly.Assembler) (*Server, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("gateway: a store is required")
	}
	if cfg.MaxAssociations <= 0 {
		cfg.MaxAssociations = 32
	}
	if cfg.MaxPendingPerHost <= 0 {
		cfg.MaxPendingPerHost = max(cfg.MaxAssociations, MinPendingPerHost)
	}
	if cfg.PendingTimeout <= 0 {
		cfg.PendingTimeout = DefaultPendingTimeout
	}
	if artim := cfg.UL.ARTIM; artim > 0 && artim < cfg.PendingTimeout {
		cfg.PendingTimeout = artim
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, store: st, asm: asm, log: cfg.Logger, listeners: map[net.Listener]struct{}{}, conns: map[*connState]struct{}{}, pending: map[string]int{}}
	st.SetMinFreeBytes(cfg.MinFreeBytes)
	return s, nil
}

// SetMinFreeBytes changes the disk watermark of a running server (0 turns it off). The store
// enforces it on every write (gateway/store: reserve before write).
func (s *Server) SetMinFreeBytes(n uint64) { s.store.SetMinFreeBytes(n) }

// Stats are counters since start.
type Stats struct {
	ActiveAssociations int64
	InstancesStored    int64
	InstancesFailed    int64
	BytesStored        int64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{ActiveAssociations: s.active.Load(), InstancesStored: s.stored.Load(), InstancesFailed: s.failed.Load(), BytesStored: s.received.Load()}
}

// ListenAndServe listens on addr (host:port) and serves until Shutdown.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Serve accepts associations on l until Shutdown; it always returns a non-nil error
// (ErrServerClosed after Shutdown).
func (s *Server) Serve(l net.Listener) error { return s.serve(l, nil) }

// ServeTLS is Serve for DICOM over TLS (PS3.15 annex B.1): every connection first completes a TLS
// handshake (bounded by ARTIM) with cfg, e.g. from ServerTLSConfig. A failed handshake (no or an
// untrusted client certificate when cfg requires one, a plain-TCP peer) closes the connection and
// counts as rejection reason obs.RejectTLSHandshake.
func (s *Server) ServeTLS(l net.Listener, cfg *tls.Config) error {
	if cfg == nil {
		return errors.New("gateway: ServeTLS needs a TLS configuration")
	}
	return s.serve(l, cfg)
}

func (s *Server) serve(l net.Listener, tlsCfg *tls.Config) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				backoff = max(min(backoff*2, time.Second), 5*time.Millisecond)
				s.log.Warn("accept failed; retrying", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if tcp, ok := conn.(*net.TCPConn); ok {
			tcp.SetNoDelay(true)
		}
		cs := &connState{conn: conn, tls: tlsCfg, busy: true, host: remoteHost(conn.RemoteAddr())}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			conn.Close()
			return ErrServerClosed
		}
		if s.pending[cs.host] >= s.cfg.MaxPendingPerHost || s.pendingTotal >= s.maxPendingTotal() {
			// A flood: closed without a word, before a goroutine or a TLS handshake is spent on it.
			s.mu.Unlock()
			obs.RejectionsTotal.With(obs.RejectTooManyPending).Inc()
			s.log.Debug("connection closed: too many pending connections", "remote", conn.RemoteAddr().String())
			conn.Close()
			continue
		}
		s.pending[cs.host]++
		s.pendingTotal++
		cs.pending = true
		s.conns[cs] = struct{}{}
		s.handlers.Add(1)
		s.mu.Unlock()
		go s.serveConn(cs)
	}
}

// Shutdown stops accepting, aborts idle associations at once and waits for associations in the
// middle of an operation to finish it (each is aborted after its response). When ctx ends first,
// the remaining associations are aborted: their unacknowledged instances are discarded.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		s.closeIdle(false)
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			s.closeIdle(true)
			<-done
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Server) closeIdle(all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for cs := range s.conns {
		if cs.busy && !all {
			continue
		}
		if cs.assoc != nil {
			go cs.assoc.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonNotSpecified)
		} else {
			cs.conn.Close()
		}
	}
}

// setBusy marks whether the association is inside an operation; it reports false when the
// server is shutting down and the association should end.
func (s *Server) setBusy(cs *connState, busy bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs.busy = busy
	return !s.closing.Load()
}

func (s *Server) serveConn(cs *connState) {
	defer s.handlers.Done()
	defer func() {
		s.admitted(cs)
		if cs.slot {
			s.active.Add(-1)
		}
		s.mu.Lock()
		delete(s.conns, cs)
		s.mu.Unlock()
	}()
	remote := cs.conn.RemoteAddr()
	// One correlation id per association, on every line logged about it.
	log := s.log.With(obs.Correlation(obs.NewCorrelationID()))
	if !s.cfg.Policy.hostMayConnect(remote) {
		// No allow-list entry names this host: closed before TLS or any PDU is read.
		obs.RejectionsTotal.With(obs.RejectHostNotAllowed).Inc()
		log.Warn("connection closed: host in no allow-list entry", "remote", remote.String())
		cs.conn.Close()
		return
	}
	// Until admitted, the TLS handshake and the A-ASSOCIATE-RQ share one short deadline.
	deadline := time.Now().Add(s.cfg.PendingTimeout)
	conn := cs.conn
	if cs.tls != nil {
		tconn, err := s.handshake(cs, deadline)
		if err != nil {
			if errors.Is(err, io.EOF) {
				log.Debug("connection closed before the TLS handshake", "remote", remote.String())
			} else {
				obs.RejectionsTotal.With(obs.RejectTLSHandshake).Inc()
				log.Warn("TLS handshake failed; connection closed", "remote", remote.String(), "err", err)
			}
			cs.conn.Close()
			return
		}
		conn = tconn
	}
	var reason, metricReason string
	ulCfg := s.cfg.UL
	ulCfg.RequestTimeout = max(time.Until(deadline), time.Millisecond)
	assoc, rq, err := ul.Accept(conn, ulCfg, func(rq *pdu.AssociateRQ) ([]pdu.PresentationContextAC, *pdu.AssociateRJ) {
		defer s.admitted(cs)
		answers, rj, why, mr := s.cfg.Policy.negotiate(rq, remote)
		if rj == nil && !s.takeSlot(cs) {
			why = fmt.Sprintf("limit of %d concurrent associations reached", s.cfg.MaxAssociations)
			mr = obs.RejectTooManyAssociations
			answers, rj = nil, &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourceServiceProviderPresentation, Reason: pdu.RejectReasonLocalLimitExceeded}
		}
		if rj == nil {
			if free, low := s.diskLow(); low {
				// "Out of resources" at association level: transient, so the sender retries later
				// instead of pushing instances that would all fail.
				why = fmt.Sprintf("free disk space %d MB is below the %d MB watermark", free>>20, s.store.MinFreeBytes()>>20)
				mr = obs.RejectDiskLow
				answers, rj = nil, &pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourceServiceProviderPresentation, Reason: pdu.RejectReasonLocalLimitExceeded}
			}
		}
		reason, metricReason = why, mr
		return answers, rj
	})
	if err != nil {
		switch {
		case metricReason != "":
			obs.RejectionsTotal.With(metricReason).Inc()
		case errors.Is(err, ul.ErrPDUTooLarge):
			obs.RejectionsTotal.With(obs.RejectPDUTooLarge).Inc()
		case errors.Is(err, ul.ErrProtocol):
			obs.RejectionsTotal.With(obs.RejectProtocolError).Inc()
		}
		if errors.Is(err, ul.ErrRejected) {
			obs.AssociationsTotal.With(obs.OutcomeRejected).Inc()
		}
		attrs := []any{"remote", remote.String(), "err", err}
		if rq != nil {
			attrs = append(attrs, "calling_ae", rq.CallingAE, "called_ae", rq.CalledAE)
		}
		if reason != "" {
			attrs = append(attrs, "reason", reason)
		}
		switch {
		case errors.Is(err, ul.ErrRejected):
			log.Warn("association rejected", attrs...)
		case rq == nil && errors.Is(err, io.EOF):
			// A TCP probe (load balancer, port check) closing without a word: not worth a warning.
			log.Debug("connection closed before A-ASSOCIATE-RQ", "remote", remote.String())
		default:
			log.Warn("association failed before establishment", attrs...)
		}
		return
	}
	s.mu.Lock()
	cs.assoc = assoc
	s.mu.Unlock()
	accepted := 0
	for _, pc := range assoc.Contexts() {
		if pc.Accepted {
			accepted++
		}
	}
	obs.AssociationsTotal.With(obs.OutcomeAccepted).Inc()
	obs.AssociationsActive.Inc()
	defer obs.AssociationsActive.Dec()
	if accepted == 0 {
		obs.RejectionsTotal.With(obs.RejectNoPresentationCtx).Inc()
	}
	start := time.Now()
	log.Info("association accepted", "remote", remote.String(), "calling_ae", assoc.CallingAE, "called_ae", assoc.CalledAE,
		"contexts_proposed", len(rq.PresentationContexts), "contexts_accepted", accepted, "peer_max_pdu", assoc.PeerMaxPDULength, "tls", cs.tls != nil)
	sess := &session{s: s, assoc: assoc, log: log}
	err = sess.run(cs)
	attrs := []any{"remote", remote.String(), "calling_ae", assoc.CallingAE, "called_ae", assoc.CalledAE,
		"stored", sess.stored, "failed", sess.failed, "bytes", sess.bytes, "duration_ms", time.Since(start).Milliseconds()}
	switch {
	case err == nil:
		log.Info("association released", attrs...)
	case errors.Is(err, ul.ErrPeerAborted):
		log.Warn("association aborted by peer", attrs...)
	case errors.Is(err, errShutdown):
		log.Info("association aborted for shutdown", attrs...)
	default:
		switch {
		case errors.Is(err, ul.ErrPDUTooLarge):
			obs.RejectionsTotal.With(obs.RejectPDUTooLarge).Inc()
		case errors.Is(err, ul.ErrProtocol) || errors.Is(err, dimse.ErrMalformed):
			obs.RejectionsTotal.With(obs.RejectProtocolError).Inc()
		}
		log.Warn("association ended abnormally", append(attrs, "err", err)...)
	}
}

// session is one association's DIMSE loop.
type session struct {
	s              *Server
	assoc          *ul.Association
	log            *slog.Logger // carries the association's correlation id
	stored, failed int
	bytes          int64
}

var errShutdown = errors.New("server shutting down")

func (x *session) run(cs *connState) error {
	for {
		if !x.s.setBusy(cs, false) {
			x.assoc.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonNotSpecified)
			return errShutdown
		}
		pcID, raw, err := x.assoc.ReadCommand()
		if err != nil {
			if errors.Is(err, ul.ErrReleaseRequested) {
				x.assoc.ReplyRelease()
				return nil
			}
			return err
		}
		x.s.setBusy(cs, true)
		cmd, err := dimse.Decode(raw)
		if err != nil {
			x.assoc.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonInvalidParameterValue)
			return err
		}
		pc, _ := x.assoc.Context(pcID)
		switch cmd.CommandField {
		case dimse.CEchoRQ:
			if cmd.HasDataSet() {
				if _, err := io.Copy(io.Discard, x.assoc.DataReader(pcID)); err != nil {
					return err
				}
			}
			if err := x.respond(pcID, cmd, dimse.CEchoRSP, dimse.StatusSuccess, ""); err != nil {
				return err
			}
		case dimse.CStoreRQ:
			if err := x.store(pcID, pc, cmd); err != nil {
				return err
			}
		default:
			if cmd.IsResponse() {
				x.assoc.Abort(pdu.AbortSourceServiceProvider, pdu.AbortReasonUnexpectedParameter)
				return fmt.Errorf("%w: unexpected DIMSE response 0x%04x from the requestor", ul.ErrProtocol, cmd.CommandField)
			}
			if cmd.HasDataSet() {
				if _, err := io.Copy(io.Discard, x.assoc.DataReader(pcID)); err != nil {
					return err
				}
			}
			x.log.Warn("unsupported DIMSE operation", "command_field", fmt.Sprintf("0x%04x", cmd.CommandField), "calling_ae", x.assoc.CallingAE)
			if err := x.respond(pcID, cmd, cmd.CommandField|0x8000, dimse.StatusUnrecognizedOperation, "only C-ECHO and C-STORE are served"); err != nil {
				return err
			}
		}
	}
}

func (x *session) respond(pcID byte, rq *dimse.Command, field uint16, status dimse.Status, comment string) error {
	rsp := &dimse.Command{CommandField: field, MessageIDBeingRespondedTo: rq.MessageID, AffectedSOPClassUID: rq.AffectedSOPClassUID,
		AffectedSOPInstanceUID: rq.AffectedSOPInstanceUID, CommandDataSetType: dimse.NoDataSet, Status: status}
	// The UIDs are echoed only when they are UIDs (both are optional in a response, PS3.7 9.3.1.2):
	// a 255-character value cannot be encoded as UI, and a name is not ours to send back.
	if !dicomstd.ValidUID(rsp.AffectedSOPClassUID) {
		rsp.AffectedSOPClassUID = ""
	}
	if !dicomstd.ValidUID(rsp.AffectedSOPInstanceUID) {
		rsp.AffectedSOPInstanceUID = ""
	}
	if status != dimse.StatusSuccess {
		rsp.ErrorComment = comment
	}
	return x.assoc.WriteCommand(pcID, rsp.Encode())
}

// store receives one C-STORE data set into the store and answers with the outcome. It returns an
// error only when the association cannot go on.
func (x *session) store(pcID byte, pc *ul.PresentationContext, cmd *dimse.Command) error {
	log := x.log
	if !cmd.HasDataSet() {
		x.failed++
		x.s.failed.Add(1)
		return x.respond(pcID, cmd, dimse.CStoreRSP, dimse.StatusCannotUnderstand, "C-STORE-RQ without a data set")
	}
	data := x.assoc.DataReader(pcID)
	reject := func(status dimse.Status, comment string) error {
		if _, err := io.Copy(io.Discard, data); err != nil {
			return err
		}
		x.failed++
		x.s.failed.Add(1)
		log.Warn("instance refused", "calling_ae", x.assoc.CallingAE, "sop_instance", dicomstd.LoggableUID(cmd.AffectedSOPInstanceUID), "status", fmt.Sprintf("0x%04x", status), "reason", comment)
		return x.respond(pcID, cmd, dimse.CStoreRSP, status, comment)
	}
	switch {
	case !dicomstd.ValidUID(cmd.AffectedSOPInstanceUID):
		obs.RejectionsTotal.With(obs.RejectInstanceInvalid).Inc()
		return reject(dimse.StatusCannotUnderstand, "Affected SOP Instance UID is not a valid UID (PS3.5 9.1)")
	case !dicomstd.ValidUID(cmd.AffectedSOPClassUID):
		obs.RejectionsTotal.With(obs.RejectInstanceInvalid).Inc()
		return reject(dimse.StatusCannotUnderstand, "Affected SOP Class UID is not a valid UID (PS3.5 9.1)")
	}
	if pc.AbstractSyntax != cmd.AffectedSOPClassUID {
		return reject(dimse.StatusSOPClassNotSupported, fmt.Sprintf("SOP class %s sent on a context for %s", cmd.AffectedSOPClassUID, pc.AbstractSyntax))
	}
	if free, low := x.s.diskLow(); low {
		obs.RejectionsTotal.With(obs.RejectDiskLow).Inc()
		return reject(dimse.StatusOutOfResources, fmt.Sprintf("free disk space %d MB is below the %d MB watermark", free>>20, x.s.store.MinFreeBytes()>>20))
	}
	pending, err := x.s.store.Begin(store.Incoming{CalledAE: x.assoc.CalledAE, CallingAE: x.assoc.CallingAE,
		SOPClassUID: cmd.AffectedSOPClassUID, SOPInstanceUID: cmd.AffectedSOPInstanceUID, TransferSyntaxUID: pc.TransferSyntax})
	if err != nil {
		return reject(statusFor(err), errorComment(err))
	}
	src := data
	var limited *io.LimitedReader
	if limit := x.s.cfg.MaxInstanceBytes; limit > 0 {
		limited = &io.LimitedReader{R: data, N: limit + 1} // one byte more tells "too large"
		src = limited
	}
	if _, err := io.Copy(pending, src); err != nil {
		pending.Discard()
		log.Warn("association dropped during a data set; partial instance discarded", "calling_ae", x.assoc.CallingAE, "sop_instance", dicomstd.LoggableUID(cmd.AffectedSOPInstanceUID), "err", err)
		return err
	}
	if limited != nil && limited.N == 0 {
		pending.Discard()
		obs.RejectionsTotal.With(obs.RejectInstanceTooLarge).Inc()
		return reject(dimse.StatusOutOfResources, fmt.Sprintf("data set larger than the instance size limit of %d bytes", x.s.cfg.MaxInstanceBytes))
	}
	inst, err := pending.Commit()
	if err != nil {
		x.failed++
		x.s.failed.Add(1)
		log.Error("instance not stored", "calling_ae", x.assoc.CallingAE, "sop_instance", dicomstd.LoggableUID(cmd.AffectedSOPInstanceUID), "err", err)
		if store.IsDiskFull(err) {
			obs.RejectionsTotal.With(obs.RejectDiskLow).Inc()
		} else if errors.Is(err, store.ErrMismatch) || errors.Is(err, store.ErrCannotUnderstand) {
			obs.RejectionsTotal.With(obs.RejectInstanceInvalid).Inc()
		}
		return x.respond(pcID, cmd, dimse.CStoreRSP, statusFor(err), errorComment(err))
	}
	obs.InstancesReceived.Inc()
	obs.BytesReceived.Add(float64(inst.Size))
	if x.s.asm != nil {
		x.s.asm.Add(x.assoc.CalledAE, x.assoc.CallingAE, inst)
	}
	x.stored++
	x.bytes += inst.Size
	x.s.stored.Add(1)
	x.s.received.Add(inst.Size)
	log.Debug("instance stored", "sop_instance", inst.SOPInstanceUID, "study", inst.StudyInstanceUID, "series", inst.SeriesInstanceUID, "bytes", inst.Size)
	return x.respond(pcID, cmd, dimse.CStoreRSP, dimse.StatusSuccess, "")
}

// errorComment is the part of a store error worth the 64 characters of ErrorComment: the cause,
// without the generic prefix of its kind.
func errorComment(err error) string {
	msg := err.Error()
	for _, kind := range []error{store.ErrMismatch, store.ErrCannotUnderstand, store.ErrOutOfResources} {
		msg = strings.TrimPrefix(msg, kind.Error()+": ")
	}
	if errors.Is(err, store.ErrBelowWatermark) {
		_, why, _ := strings.Cut(msg, ": ") // without the step: the numbers matter more
		return why
	}
	// A system error (disk full, I/O error) first, then the step: paths would eat the 64 bytes.
	var errno syscall.Errno
	if errors.As(err, &errno) {
		step, _, _ := strings.Cut(msg, ":")
		return fmt.Sprintf("%s (%s)", errno.Error(), step)
	}
	return msg
}

// diskLow reports whether the free space left to writers (less the bytes reserved by instances
// in flight) is under the watermark, read now.
func (s *Server) diskLow() (uint64, bool) { return s.store.Headroom() }

// statusFor maps a store error to a C-STORE failure status.
func statusFor(err error) dimse.Status {
	switch {
	case errors.Is(err, store.ErrMismatch):
		return dimse.StatusDataSetDoesNotMatchClass
	case errors.Is(err, store.ErrCannotUnderstand):
		return dimse.StatusCannotUnderstand
	case store.IsDiskFull(err):
		return dimse.StatusOutOfResources
	}
	return dimse.StatusOutOfResourcesLocal
}

// handshake runs the server side of the TLS handshake on a new connection before deadline (the
// pending connection's).
func (s *Server) handshake(cs *connState, deadline time.Time) (*tls.Conn, error) {
	tconn := tls.Server(cs.conn, cs.tls)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := tconn.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tconn, nil
}
