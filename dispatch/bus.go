// Package dispatch moves studies between the roles of the gateway over NATS JetStream: the
// embedded (or external) server, the stream/KV/object-store topology, study-complete events,
// inference and export workers, and delivery to downstream PACS (C-STORE, STOW-RS).
//
// Everything durable lives in JetStream, never in process memory, so any role can be killed and
// restarted (or run on another machine with --nats-url) without losing a study.
package dispatch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream topology. They carry a DPERSONA prefix so the gateway can share an
// existing NATS cluster with other applications.
const (
	StreamStudies    = "DPERSONA_STUDIES"    // work queue: study-complete events -> inference workers
	StreamResults    = "DPERSONA_RESULTS"    // work queue: one export job per (result, destination)
	StreamDeadLetter = "DPERSONA_DEADLETTER" // what could not be processed or delivered, with the reason
	StreamAdvisories = "DPERSONA_ADVISORIES" // max-deliveries advisories of the two work queues

	SubjectStudyComplete = "dpersona.study.complete"
	SubjectResultPrefix  = "dpersona.result." // + destination token
	SubjectDeadPrefix    = "dpersona.dead."   // + "study" or "result"
	advisoryMaxDeliver   = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."

	BucketStudyState = "dpersona-studies"   // KV: study key -> StudyState JSON
	BucketResults    = "dpersona-results"   // object store: SEG objects
	BucketInstances  = "dpersona-instances" // object store: source instances when storage is not shared

	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id: a replay within it is a no-op
	// in the stream itself; older replays are caught by the study state and the result objects.
	DuplicateWindow = 24 * time.Hour
)

// BusConfig says which NATS to use and how.
type BusConfig struct {
	// URL of an external NATS cluster (comma-separated seed URLs). Empty starts an embedded
	// nats-server with JetStream in StoreDir.
	URL string
	// StoreDir is the embedded server's JetStream directory (DATA/nats). Required when URL is empty.
	StoreDir string
	// ListenPort, when non-zero, makes the embedded server accept clients on 127.0.0.1:ListenPort
	// so other local processes (e.g. a second inference worker) can join with --nats-url. Zero
	// keeps it in-process only. -1 picks a free port.
	ListenPort int
	// ServerName of the embedded server (default "dpersona").
	ServerName string
	// SyncAlways makes the embedded server fsync every JetStream write (survives power loss, not
	// only process kills, at a throughput cost).
	SyncAlways bool

	// Client options for an external cluster.
	CredsFile   string // NATS .creds file (JWT + NKey)
	NKeySeed    string // file with an NKey seed, when not using creds
	User, Pass  string // user/password authentication
	Token       string
	TLSCAFile   string // CA bundle to verify the servers
	TLSCertFile string // client certificate (mutual TLS)
	TLSKeyFile  string

	// Replicas of streams, KV and object stores (1 on a single server, 3 on a 3-node cluster).
	Replicas int
	// DataDir is the root that claim-check paths in StudyComplete are relative to.
	DataDir string
	// UploadInstances puts the source instances in the instances object store with each
	// study-complete event, for workers on machines that do not share DataDir.
	UploadInstances bool
	// ConnectName identifies this process in NATS monitoring.
	ConnectName string
	// MinFreeBytes: the embedded store is reported unhealthy below this much free space, and is
	// restarted after a storage failure (disk full) once it has this much again (storage.go).
	// Default DefaultBusMinFreeBytes.
	MinFreeBytes uint64
}

// Bus is a connection to JetStream with the gateway's topology. It is safe for concurrent use.
type Bus struct {
	cfg    BusConfig
	log    *slog.Logger
	server *server.Server // nil when connected to an external cluster
	nc     *nats.Conn
	js     jetstream.JetStream

	state     jetstream.KeyValue
	results   jetstream.ObjectStore
	instances jetstream.ObjectStore
	obs       Observer
	cache     stateCache
	storage   storageHealth
}

// OpenBus starts the embedded server (when cfg.URL is empty) and connects to it, or connects to
// the external cluster. Call EnsureTopology before publishing.
func OpenBus(ctx context.Context, cfg BusConfig, log *slog.Logger) (*Bus, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	b := &Bus{cfg: cfg, log: log.With("component", "bus")}
	opts := []nats.Option{
		nats.Name(orDefault(cfg.ConnectName, "dpersona")),
		// Roles keep running through a NATS restart or a cluster node failure: reconnect forever
		// and keep buffering publishes meanwhile (JetStream publishes still wait for their ack).
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { b.log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}
	url := cfg.URL
	if url == "" {
		ns, err := startEmbedded(cfg, b.log, b.noteServerError)
		if err != nil {
			return nil, err
		}
		b.server = ns
		// This process talks to its own server in-process (no TCP, no loopback latency); the
		// listener, if any, is for the other processes.
		opts = append(opts, nats.InProcessServer(ns))
		url = ns.ClientURL()
	} else {
		auth, err := clientAuthOptions(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, auth...)
		// The cluster may still be electing leaders when a role starts: keep trying.
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	nc, err := connectWithin(ctx, url, opts)
	if err != nil {
		b.shutdownServer()
		return nil, err
	}
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	b.js = js
	return b, nil
}

// connectWithin connects and, with RetryOnFailedConnect, waits until the connection is up or ctx
// ends, so a caller never gets a half-open connection silently.
func connectWithin(ctx context.Context, url string, opts []nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for !nc.IsConnected() {
		// Bad credentials or certificates do not fix themselves: fail now, naming the cause.
		if err := nc.LastError(); err != nil && (errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
			strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "tls:")) {
			nc.Close()
			return nil, fmt.Errorf("connect to nats %s: %w", url, err)
		}
		select {
		case <-wait.Done():
			nc.Close()
			return nil, fmt.Errorf("connect to nats %s: no server answered within 30s", url)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nc, nil
}

func startEmbedded(cfg BusConfig, log *slog.Logger, onError func(string)) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: BusConfig.StoreDir is required (DATA/nats)")
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats store %s: %w", cfg.StoreDir, err)
	}
	opts := &server.Options{
		ServerName: orDefault(cfg.ServerName, "dpersona"),
		Host:       "127.0.0.1", // loopback only: an external cluster is the way to go multi-machine
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		// The server writes through our slog adapter below.
		NoLog: false,
	}
	switch {
	case cfg.ListenPort == 0:
		opts.DontListen = true
	case cfg.ListenPort < 0:
		opts.Port = server.RANDOM_PORT
	default:
		opts.Port = cfg.ListenPort
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.SetLoggerV2(&serverLogger{log: log.With("component", "nats-server"), onError: onError}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats (store %s) was not ready within 30s", cfg.StoreDir)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats: JetStream did not start (store %s)", cfg.StoreDir)
	}
	return ns, nil
}

func clientAuthOptions(cfg BusConfig) ([]nats.Option, error) {
	var opts []nats.Option
	if cfg.CredsFile != "" {
		if _, err := os.Stat(cfg.CredsFile); err != nil {
			return nil, fmt.Errorf("nats creds file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeySeed != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", cfg.NKeySeed, err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Pass))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCAFile != "" || cfg.TLSCertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.TLSCAFile != "" {
			pem, err := os.ReadFile(cfg.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("nats TLS CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("nats TLS CA %s: no PEM certificate in it", cfg.TLSCAFile)
			}
			tc.RootCAs = pool
		}
		if cfg.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("nats TLS client certificate %s: %w", cfg.TLSCertFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// ClientURL is the URL other processes can join the embedded server with ("" when the embedded
// server does not listen, or when connected to an external cluster, where it is the connected URL).
func (b *Bus) ClientURL() string {
	if b.server != nil {
		if b.cfg.ListenPort == 0 {
			return ""
		}
		return b.server.ClientURL()
	}
	return b.nc.ConnectedUrl()
}

// ListenAddr is host:port of the embedded server's client listener ("" when it has none).
func (b *Bus) ListenAddr() string {
	if b.server == nil || b.cfg.ListenPort == 0 {
		return ""
	}
	if a, ok := b.server.Addr().(*net.TCPAddr); ok {
		return net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
	}
	return ""
}

// JetStream exposes the JetStream context (tests, operator tools).
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn exposes the NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Close drains the connection and shuts the embedded server down (JetStream data stays on disk).
func (b *Bus) Close() {
	if b.nc != nil {
		// Drain lets in-flight acks reach the server; bounded so shutdown never hangs.
		done := make(chan struct{})
		b.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := b.nc.Drain(); err != nil {
			b.nc.Close()
		} else {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				b.nc.Close()
			}
		}
	}
	b.shutdownServer()
}

func (b *Bus) shutdownServer() {
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
		b.server = nil
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// serverLogger adapts nats-server's logger to slog. Its notices (a dozen start-up banner lines)
// go to Debug so the gateway's own log stays readable; traces are dropped. Errors also go to
// onError, which is how the bus learns of storage failures (storage.go).
type serverLogger struct {
	log     *slog.Logger
	onError func(string)
}

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Fatalf(format string, v ...any)  { l.error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.error(fmt.Sprintf(format, v...)) }

func (l *serverLogger) error(msg string) {
	l.log.Error(msg)
	if l.onError != nil {
		l.onError(msg)
	}
}
func (l *serverLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any) {}

// Observer receives the bus's measurements (the serve command feeds them to its metrics; the
// package itself stays free of a metrics dependency). Nil fields are skipped.
type Observer struct {
	SeriesProcessed func(d time.Duration)             // one model run over one series
	InferenceFailed func()                            // a series whose processing failed (each attempt)
	StudyInferred   func(d time.Duration)             // study event taken -> SEG objects stored
	FilesExported   func(destination string, n int)   // files acknowledged by a destination
	ExportFailed    func(destination string)          // a failed delivery attempt
	StudyDelivered  func(sinceInferred time.Duration) // SEG objects stored -> every destination acknowledged
}

// SetObserver installs o; call it before starting workers.
func (b *Bus) SetObserver(o Observer) { b.obs = o }

// QueueDepth is the number of messages waiting in a stream (the work queues: StreamStudies,
// StreamResults).
func (b *Bus) QueueDepth(ctx context.Context, stream string) (uint64, error) {
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
