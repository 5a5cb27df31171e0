package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"dpersona/dispatch"
	"dpersona/gateway"
	"dpersona/gateway/assembly"
	"dpersona/gateway/store"
	"dpersona/inference"
	"dpersona/internal/httpapi"
	"dpersona/internal/lifecycle"
	"dpersona/internal/obs"
	"dpersona/pipeline"
)

func init() { registerCommand(newServeCommand) }

// Role names for --roles.
const (
	roleIngest   = "ingest"
	roleInfer    = "infer"
	roleDispatch = "dispatch"
)

// serveOptions are the flags of `serve`; flags the user set override the config file.
type serveOptions struct {
	configPath  string
	dataDir     string
	dicomListen string
	httpListen  string
	aeTitle     string
	quietWindow time.Duration
	logLevel    string
	tlsListen   string
	tlsCert     string
	tlsKey      string
	tlsClientCA string

	roles     []string
	natsURL   string
	natsPort  int
	natsCreds string
	natsCA    string
	natsCert  string
	natsKey   string
	replicas  int
	upload    bool
	forwardTo []string
	stowTo    []string
	workers   int
	model     modelFlags

	// changed reports whether the user set a flag (cobra's Flags().Changed).
	changed func(name string) bool
}

// natsSection is the "nats" key of the serve config; flags override it.
type natsSection struct {
	URL             string `json:"url"`
	ListenPort      int    `json:"listen_port"`
	Replicas        int    `json:"replicas"`
	CredsFile       string `json:"creds_file"`
	TLSCA           string `json:"tls_ca"`
	TLSCert         string `json:"tls_cert"`
	TLSKey          string `json:"tls_key"`
	UploadInstances bool   `json:"upload_instances"`
	SyncAlways      bool   `json:"sync_always"`
}

// workerSection is the "workers" key: retry policy of inference and export.
type workerSection struct {
	InferTimeout     dispatch.Duration `json:"infer_timeout"`      // one series, default 30m
	InferMaxAttempts int               `json:"infer_max_attempts"` // per study, default 5
	ExportAttempts   int               `json:"export_max_attempts"`
	// AckWait: how long a study or export job held by a worker that died waits before another
	// worker (or this one, restarted) gets it. Default 30s (infer) and 60s (export).
	AckWait dispatch.Duration `json:"ack_wait"`
}

func newServeCommand() *cobra.Command {
	var opts serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway: DICOM listener (C-ECHO, C-STORE), study assembly, event bus, HTTP API",
		Long: `serve runs the gateway on embedded defaults: a storage SCP on --dicom-listen that writes every
acknowledged instance durably under DATA/studies, assembles studies per (called AE, StudyInstanceUID)
and publishes each completed study on the embedded NATS JetStream bus; GET /api/studies on
--http-listen lists the studies with their states, /healthz, /readyz and /metrics serve operators.
The --config file is JSON (see docs); flags override it. SIGINT/SIGTERM shut down in order:
associations in progress finish their current instance first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadServeConfig(opts.configPath)
			if err != nil {
				return err
			}
			opts.changed = cmd.Flags().Changed
			opts.applyTo(&cfg)
			if err := cfg.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServe(ctx, &cfg, &opts)
		},
	}
	d := defaultServeConfig()
	fl := cmd.Flags()
	fl.StringVar(&opts.configPath, "config", "", "JSON configuration file (flags override it)")
	fl.StringVar(&opts.dataDir, "data-dir", d.DataDir, "data directory (incoming/, studies/, nats/)")
	fl.StringVar(&opts.dicomListen, "dicom-listen", d.DICOMListen, "DICOM listener HOST:PORT")
	fl.StringVar(&opts.httpListen, "http-listen", d.HTTPListen, "HTTP API HOST:PORT (empty: no HTTP)")
	fl.StringVar(&opts.aeTitle, "ae-title", d.AETitle, "called AE title of the gateway")
	fl.DurationVar(&opts.quietWindow, "quiet-window", time.Duration(d.QuietWindow), "a study is complete after this long without new instances")
	fl.StringVar(&opts.logLevel, "log-level", d.LogLevel, "debug, info, warn or error")
	fl.StringVar(&opts.tlsListen, "tls-listen", "", "DICOM TLS listener HOST:PORT (e.g. :2762; needs --tls-cert and --tls-key)")
	fl.StringVar(&opts.tlsCert, "tls-cert", "", "PEM server certificate (chain) of the DICOM TLS listener")
	fl.StringVar(&opts.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fl.StringVar(&opts.tlsClientCA, "tls-client-ca", "", "PEM CA file: require client certificates signed by it on the TLS listener")
	fl.StringSliceVar(&opts.roles, "roles", []string{roleIngest, roleInfer, roleDispatch},
		"roles this process runs: ingest (DICOM listener, study assembly), infer (model workers), dispatch (export to destinations)")
	fl.StringVar(&opts.natsURL, "nats-url", "", "join an external NATS JetStream cluster (comma-separated URLs) instead of the embedded server")
	fl.IntVar(&opts.natsPort, "nats-port", 0, "let the embedded NATS server accept other processes on 127.0.0.1:PORT (0: in-process only)")
	fl.StringVar(&opts.natsCreds, "nats-creds", "", "NATS credentials file for --nats-url")
	fl.StringVar(&opts.natsCA, "nats-ca", "", "CA bundle to verify the NATS servers (TLS)")
	fl.StringVar(&opts.natsCert, "nats-cert", "", "client certificate for NATS mutual TLS")
	fl.StringVar(&opts.natsKey, "nats-key", "", "client key for NATS mutual TLS")
	fl.IntVar(&opts.replicas, "nats-replicas", 0, "replicas of streams, KV and object stores (1 embedded; 3 on a 3-node cluster)")
	fl.BoolVar(&opts.upload, "upload-instances", false, "also put received instances in the JetStream object store (workers on machines without the data directory)")
	fl.StringArrayVar(&opts.forwardTo, "forward-to", nil, "send every result with C-STORE to AET@HOST:PORT (repeatable)")
	fl.StringArrayVar(&opts.stowTo, "stow-to", nil, "send every result with DICOMweb STOW-RS to this DICOMweb root URL (repeatable)")
	fl.IntVar(&opts.workers, "workers", 1, "studies one inference role processes at once")
	opts.model.register(cmd, true)
	return cmd
}

// applyTo puts the flags the user set over the config file.
func (o *serveOptions) applyTo(cfg *serveConfig) {
	if o.changed("data-dir") {
		cfg.DataDir = o.dataDir
	}
	if o.changed("dicom-listen") {
		cfg.DICOMListen = o.dicomListen
	}
	if o.changed("http-listen") {
		cfg.HTTPListen = o.httpListen
	}
	if o.changed("ae-title") {
		cfg.AETitle = o.aeTitle
	}
	if o.changed("quiet-window") {
		cfg.QuietWindow = duration(o.quietWindow)
	}
	if o.changed("log-level") {
		cfg.LogLevel = o.logLevel
	}
	if o.changed("tls-listen") {
		cfg.TLS.Listen = o.tlsListen
	}
	if o.changed("tls-cert") {
		cfg.TLS.CertFile = o.tlsCert
	}
	if o.changed("tls-key") {
		cfg.TLS.KeyFile = o.tlsKey
	}
	if o.changed("tls-client-ca") {
		cfg.TLS.ClientCAFile = o.tlsClientCA
	}
}

// busConfig is the bus configuration: the "nats" config section with the flags over it.
func (o *serveOptions) busConfig(dataDir string, ns natsSection) dispatch.BusConfig {
	cfg := dispatch.BusConfig{StoreDir: filepath.Join(dataDir, "nats"), DataDir: dataDir, ConnectName: "dpersona-serve"}
	pick := func(flag, flagVal, cfgVal string) string {
		if o.changed(flag) {
			return flagVal
		}
		return cfgVal
	}
	cfg.URL = pick("nats-url", o.natsURL, ns.URL)
	cfg.CredsFile = pick("nats-creds", o.natsCreds, ns.CredsFile)
	cfg.TLSCAFile = pick("nats-ca", o.natsCA, ns.TLSCA)
	cfg.TLSCertFile = pick("nats-cert", o.natsCert, ns.TLSCert)
	cfg.TLSKeyFile = pick("nats-key", o.natsKey, ns.TLSKey)
	cfg.ListenPort = ns.ListenPort
	if o.natsPort != 0 {
		cfg.ListenPort = o.natsPort
	}
	cfg.Replicas = ns.Replicas
	if o.replicas != 0 {
		cfg.Replicas = o.replicas
	}
	cfg.UploadInstances = ns.UploadInstances || o.upload
	cfg.SyncAlways = ns.SyncAlways
	return cfg
}

// runServe runs the roles until ctx ends or a listener fails (lifecycle.Group: the process then
// exits non-zero for its supervisor to restart it), then shuts down in order within the one
// shutdown_timeout: the DICOM listeners (current instances finish), HTTP, the workers and study
// assembly, the bus.
func runServe(ctx context.Context, cfg *serveConfig, opts *serveOptions) error {
	level, err := obs.ParseLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	logger := obs.NewLogger(os.Stderr, level)
	slog.SetDefault(logger)
	obs.SetBuildInfo(version)
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	// One process per data directory, locked before anything in it is touched (the store empties
	// incoming/, the embedded NATS opens its store): a second serve is refused, naming the first.
	lock, err := lifecycle.LockDataDir(dataDir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	obs.WatchDiskFree(dataDir)
	life := lifecycle.NewGroup(logger, time.Duration(cfg.ShutdownTimeout))
	roles, err := parseRoles(opts.roles)
	if err != nil {
		return err
	}

	// The config sections of the bus and the workers.
	var ns natsSection
	var ws workerSection
	var sources dispatch.RoutingSources
	if _, err := cfg.Section("nats", &ns); err != nil {
		return err
	}
	if _, err := cfg.Section("workers", &ws); err != nil {
		return err
	}
	if sources.RoutesConfigured, err = cfg.Section("routes", &sources.Routes); err != nil {
		return err
	}
	if _, err := cfg.Section("destinations", &sources.Destinations); err != nil {
		return err
	}
	for _, name := range cfg.unclaimedSections() {
		logger.Warn("configuration key not used by any role", "key", name)
	}

	// The bus.
	openCtx, cancelOpen := context.WithTimeout(ctx, 60*time.Second)
	bus, err := dispatch.OpenBus(openCtx, opts.busConfig(dataDir, ns), logger)
	if err == nil {
		err = bus.EnsureTopology(openCtx)
		if err != nil {
			bus.Close()
		}
	}
	cancelOpen()
	if err != nil {
		return fmt.Errorf("event bus: %w", err)
	}
	defer bus.Close() // on an early return; at shutdown the group closes it (Close is idempotent)
	life.OnStop("event bus", func(context.Context) error { bus.Close(); return nil })
	bus.SetObserver(metricsObserver())
	watchQueueDepths(bus)
	// "nats": connected, JetStream answering and, embedded, its store able to write (not after a
	// disk-full failure until it recovered); "shutdown": off as soon as stopping begins.
	checks := []obs.Check{{Name: "nats", Func: bus.Healthy}, {Name: "shutdown", Func: life.Ready}}

	// Routing: config routes and destinations, --forward-to and --stow-to, the default model.
	sources.ForwardTo, sources.StowTo = opts.forwardTo, opts.stowTo
	sources.DefaultModel, err = resolveModelDir(opts.model.Model)
	if err != nil {
		sources.DefaultModel = defaultModelDir
	}
	routing, err := dispatch.MergeRouting(sources)
	if err != nil {
		return err
	}

	// Workers run on runCtx, cancelled at shutdown after the DICOM listener stopped.
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	workers := newWorkerGroup(logger)
	life.OnStop("workers", func(ctx context.Context) error { cancelRun(); return workers.stop(ctx) })
	workers.run(runCtx, "study state watch", func(c context.Context) error { bus.WatchStudyStates(c); return nil })
	workers.run(runCtx, "bus storage recovery", bus.RunStorageRecovery)
	moves := false
	if roles.infer {
		models, err := pipeline.OpenModels(ctx, routing.Models(), func(dir string) (*inference.Engine, error) {
			return opts.model.openEngine(dir, logger)
		}, "dpersona "+version, logger)
		switch {
		case errors.Is(err, pipeline.ErrNoModel):
			// Ingest keeps working and studies wait durably in the queue (state "received") until
			// an inference role with a model joins; say so once, loudly.
			logger.Error("inference role is OFF: no model bundle", "reason", err.Error(),
				"hint", "put a bundle at "+defaultModelDir+" or pass --model; received studies wait in the queue")
			// An inference role without a model must not look ready to an orchestrator.
			checks = append(checks, obs.Check{Name: "model", Func: func(context.Context) error { return err }})
		case err != nil:
			return err
		default:
			// Every routed bundle was verified, loaded and warmed up above.
			checks = append(checks, obs.Check{Name: "model", Func: func(context.Context) error { return nil }})
			workers.closeAtStop(models.Close)
			opt := dispatch.InferOptions{Routing: routing, Processor: dispatch.PipelineProcessor{Models: models}, Concurrency: opts.workers,
				Timeout: time.Duration(ws.InferTimeout), MaxDeliver: ws.InferMaxAttempts, AckWait: time.Duration(ws.AckWait)}
			workers.run(runCtx, "inference worker", func(c context.Context) error { return bus.RunInferWorker(c, opt) })
			moves = true
		}
	}
	if roles.dispatch {
		for _, d := range routing.Destinations {
			opt := dispatch.ExportOptions{Destination: d, Exporter: dispatch.NewExporter(d, cfg.AETitle),
				MaxDeliver: ws.ExportAttempts, AckWait: time.Duration(ws.AckWait)}
			workers.run(runCtx, "export worker "+d.Name, func(c context.Context) error { return bus.RunExportWorker(c, opt) })
		}
		moves = true
	}
	if moves {
		workers.run(runCtx, "dead-letter mover", bus.RunDeadLetterMover)
	}
	var dests []string
	for _, d := range routing.Destinations {
		dests = append(dests, d.Name+"="+d.Kind)
	}
	logger.Info("roles started", "ingest", roles.ingest, "infer", roles.infer, "dispatch", roles.dispatch,
		"routes", len(routing.Routes), "destinations", strings.Join(dests, ","), "nats", orEmbedded(bus.ClientURL()))

	// Ingest: study assembly and the DICOM server; its listeners start last, below.
	var asm *assembly.Assembler
	var srv *gateway.Server
	var dicomListeners []func()
	if roles.ingest {
		st, err := store.Open(dataDir, store.Options{})
		if err != nil {
			return err
		}
		asm, err = assembly.New(assembly.Config{Store: st, QuietWindow: time.Duration(cfg.QuietWindow), Sink: busSink{bus: bus}, Logger: logger})
		if err != nil {
			return err
		}
		srv, err = gateway.NewServer(gateway.Config{Policy: cfg.policy(), MaxAssociations: cfg.MaxAssociations, MaxPendingPerHost: cfg.MaxPendingPerHost,
			PendingTimeout: time.Duration(cfg.Timeouts.Pending), UL: cfg.ulConfig(),
			MinFreeBytes: cfg.MinFreeMB << 20, MaxInstanceBytes: cfg.MaxInstanceMB << 20, Logger: logger}, st, asm)
		if err != nil {
			return err
		}
		checks = append(checks, obs.DiskCheck(dataDir, cfg.MinFreeMB<<20))
		workers.run(runCtx, "study assembly", func(c context.Context) error { asm.Run(c); return nil })
		if cfg.DICOMListen != "" {
			l, err := net.Listen("tcp", cfg.DICOMListen)
			if err != nil {
				return fmt.Errorf("DICOM listener: %w", err)
			}
			defer l.Close()
			dicomListeners = append(dicomListeners, func() {
				life.Serve("DICOM listener "+l.Addr().String(), func() error { return serveUntilClosed(srv.Serve(l), gateway.ErrServerClosed) }, stopNothing)
				logger.Info("DICOM listener ready", "addr", l.Addr().String(), "ae_titles", cfg.policy().AETitles, "data_dir", dataDir, "quiet_window", time.Duration(cfg.QuietWindow).String())
			})
		}
		if cfg.TLS.Listen != "" {
			tlsCfg, err := gateway.ServerTLSConfig(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ClientCAFile)
			if err != nil {
				return err
			}
			tl, err := net.Listen("tcp", cfg.TLS.Listen)
			if err != nil {
				return fmt.Errorf("DICOM TLS listener: %w", err)
			}
			defer tl.Close()
			dicomListeners = append(dicomListeners, func() {
				life.Serve("DICOM TLS listener "+tl.Addr().String(), func() error { return serveUntilClosed(srv.ServeTLS(tl, tlsCfg), gateway.ErrServerClosed) }, stopNothing)
				logger.Info("DICOM TLS listener ready", "addr", tl.Addr().String(), "client_certificates_required", cfg.TLS.ClientCAFile != "")
			})
		}
	}

	// HTTP: the API behind the bearer token, probes and metrics outside it. It stops after the
	// DICOM listeners, so /readyz says "shutting down" while associations drain.
	if cfg.HTTPListen != "" {
		api := httpapi.New(httpapi.GatewayStudies(asm), logger)
		api.AddOverlay(httpapi.BusOverlay(bus))
		apiMux := http.NewServeMux()
		api.Register(apiMux)
		apiMux.Handle("GET /api/dead-letters", httpapi.DeadLettersHandler(bus))
		apiMux.Handle("POST /api/dead-letters/{seq}/replay", httpapi.ReplayHandler(bus))
		apiMux.Handle("POST /api/studies/{uid}/lesions", httpapi.LesionsHandler(bus))
		token := cfg.APIToken
		if t := os.Getenv("DPERSONA_API_TOKEN"); t != "" {
			token = t
		}
		mux := http.NewServeMux()
		mux.Handle("/api/", obs.RequireBearer(token, apiMux))
		obs.Mount(mux, checks...)
		hl, err := net.Listen("tcp", cfg.HTTPListen)
		if err != nil {
			return fmt.Errorf("HTTP listener: %w", err)
		}
		httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute}
		life.Serve("HTTP listener "+hl.Addr().String(), func() error { return serveUntilClosed(httpSrv.Serve(hl), http.ErrServerClosed) }, httpSrv.Shutdown)
		logger.Info("HTTP listener ready", "addr", hl.Addr().String())
	}
	// The DICOM server stops first: associations in progress finish their current instance
	// (within the deadline), new ones are no longer accepted.
	if srv != nil {
		life.OnStop("DICOM server", srv.Shutdown)
		for _, start := range dicomListeners {
			start()
		}
	}
	return life.Run(ctx)
}

// serveUntilClosed maps a server's "closed by Shutdown" error to nil: lifecycle.Group treats any
// return before shutdown as a failure, and any error after it as expected.
func serveUntilClosed(err, closed error) error {
	if errors.Is(err, closed) {
		return nil
	}
	return err
}

// stopNothing is the stop of a listener whose server is stopped on its own (one gateway.Server
// serves both DICOM listeners).
func stopNothing(context.Context) error { return nil }

// roleSet is the parsed --roles.
type roleSet struct{ ingest, infer, dispatch bool }

func parseRoles(list []string) (roleSet, error) {
	var r roleSet
	for _, s := range list {
		switch strings.TrimSpace(strings.ToLower(s)) {
		case roleIngest:
			r.ingest = true
		case roleInfer:
			r.infer = true
		case roleDispatch:
			r.dispatch = true
		case "":
		default:
			return r, fmt.Errorf("--roles: unknown role %q (ingest, infer, dispatch)", s)
		}
	}
	if !r.ingest && !r.infer && !r.dispatch {
		return r, errors.New("--roles: no role given (ingest, infer, dispatch)")
	}
	return r, nil
}

// workerGroup runs the long-lived goroutines of the roles and stops them together.
type workerGroup struct {
	log     *slog.Logger
	wg      sync.WaitGroup
	closers []func()
}

func newWorkerGroup(log *slog.Logger) *workerGroup { return &workerGroup{log: log} }

func (g *workerGroup) run(ctx context.Context, what string, f func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("role stopped", "what", what, "err", err)
		}
	}()
}

// closeAtStop runs c once the workers stopped (e.g. releasing the model sessions).
func (g *workerGroup) closeAtStop(c func()) { g.closers = append(g.closers, c) }

// stop waits for the workers (their context is cancelled by the caller) until ctx, the one
// shutdown deadline, ends, and then runs the closers. Workers still running are abandoned: their
// messages are redelivered after AckWait, and everything they did is idempotent.
func (g *workerGroup) stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.New("workers did not stop within the shutdown deadline")
		g.log.Warn(err.Error())
	}
	for _, c := range g.closers {
		c()
	}
	return err
}

// metricsObserver counts the workers' events in the project's metrics.
func metricsObserver() dispatch.Observer {
	return dispatch.Observer{
		SeriesProcessed: func(d time.Duration) { obs.InferenceSeconds.Observe(d.Seconds()) },
		InferenceFailed: func() { obs.InferenceFailures.Inc() },
		StudyInferred:   func(d time.Duration) { obs.StudyStageSeconds.With(obs.StageInfer).Observe(d.Seconds()) },
		FilesExported:   func(dest string, n int) { obs.ExportsTotal.With(dest).Add(float64(n)) },
		ExportFailed:    func(dest string) { obs.ExportFailures.With(dest).Inc() },
		StudyDelivered:  func(d time.Duration) { obs.StudyStageSeconds.With(obs.StageExport).Observe(d.Seconds()) },
	}
}

// watchQueueDepths exports the depth of each work queue, read from the bus at scrape time.
func watchQueueDepths(bus *dispatch.Bus) {
	for _, q := range []struct{ label, stream string }{{"study_complete", dispatch.StreamStudies}, {"results", dispatch.StreamResults}, {"dead_letter", dispatch.StreamDeadLetter}} {
		stream := q.stream
		obs.QueueDepth.Set(func() float64 {
			c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := bus.QueueDepth(c, stream)
			if err != nil {
				return -1
			}
			return float64(n)
		}, q.label)
	}
}

func orEmbedded(url string) string {
	if url == "" {
		return "embedded (in-process)"
	}
	return url
}

// unclaimedSections lists configuration keys that no role read.
func (c *serveConfig) unclaimedSections() []string {
	var out []string
	for k := range c.sections {
		if !c.claimed[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// busSink hands the gateway's completed studies to the bus and counts them in the metrics.
type busSink struct{ bus *dispatch.Bus }

func (s busSink) StudyComplete(ctx context.Context, cs gateway.CompletedStudy) error {
	if err := s.bus.PublishStudyComplete(ctx, dispatch.FromCompletedStudy(cs)); err != nil {
		return err
	}
	obs.StudiesCompleted.Inc()
	if !cs.FirstReceivedAt.IsZero() && cs.CompletedAt.After(cs.FirstReceivedAt) {
		obs.StudyStageSeconds.With(obs.StageReceive).Observe(cs.CompletedAt.Sub(cs.FirstReceivedAt).Seconds())
	}
	return nil
}
