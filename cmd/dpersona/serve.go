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
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"dpersona/dispatch"
	"dpersona/gateway"
	"dpersona/gateway/assembly"
	"dpersona/gateway/store"
	"dpersona/internal/httpapi"
	"dpersona/internal/obs"
)

func init() { registerCommand(newServeCommand) }

// Extension points for the other roles, registered from their own files with init(), so that
// serve.go does not change when a role is added:
//
//   - serveFlagHooks add flags to `serve` (e.g. --roles, --nats-url, --forward-to).
//   - serveBusConfigHooks adjust the bus configuration before the bus is opened (e.g. an external
//     NATS URL from a flag or a config section).
//   - serveStartHooks start a role once the bus is open and before the DICOM listener starts;
//     they may add HTTP routes, readiness checks and /api/studies overlays through the env, or
//     turn the listener off (env.Ingest = false). The returned stop function runs at shutdown,
//     in reverse order of start.
var (
	serveFlagHooks      []func(cmd *cobra.Command)
	serveBusConfigHooks []func(env *serveEnv, cfg *dispatch.BusConfig) error
	serveStartHooks     []func(ctx context.Context, env *serveEnv) (stop func(), err error)
)

// serveEnv is what a role's start hook gets.
type serveEnv struct {
	Logger  *slog.Logger
	Config  *serveConfig
	DataDir string // absolute
	// Bus is open and its topology ensured (nil inside bus-config hooks).
	Bus *dispatch.Bus
	// Ingest runs the DICOM listener and study assembly (default true).
	Ingest bool

	mux      *http.ServeMux
	apiMux   *http.ServeMux
	api      *httpapi.API
	checksMu sync.Mutex
	checks   []obs.Check
}

// AddStudyOverlay refines GET /api/studies with later states (inferring, exporting, done, ...).
func (e *serveEnv) AddStudyOverlay(o httpapi.Overlay) { e.api.AddOverlay(o) }

// AddReadyCheck adds a /readyz check.
func (e *serveEnv) AddReadyCheck(c obs.Check) {
	e.checksMu.Lock()
	defer e.checksMu.Unlock()
	e.checks = append(e.checks, c)
}

// HandleAPI mounts a handler under /api/ behind the API bearer token.
func (e *serveEnv) HandleAPI(pattern string, h http.Handler) { e.apiMux.Handle(pattern, h) }

// Handle mounts a handler outside the API (no token), e.g. a probe.
func (e *serveEnv) Handle(pattern string, h http.Handler) { e.mux.Handle(pattern, h) }

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
			f := cmd.Flags()
			if f.Changed("data-dir") {
				cfg.DataDir = opts.dataDir
			}
			if f.Changed("dicom-listen") {
				cfg.DICOMListen = opts.dicomListen
			}
			if f.Changed("http-listen") {
				cfg.HTTPListen = opts.httpListen
			}
			if f.Changed("ae-title") {
				cfg.AETitle = opts.aeTitle
			}
			if f.Changed("quiet-window") {
				cfg.QuietWindow = duration(opts.quietWindow)
			}
			if f.Changed("log-level") {
				cfg.LogLevel = opts.logLevel
			}
			if f.Changed("tls-listen") {
				cfg.TLS.Listen = opts.tlsListen
			}
			if f.Changed("tls-cert") {
				cfg.TLS.CertFile = opts.tlsCert
			}
			if f.Changed("tls-key") {
				cfg.TLS.KeyFile = opts.tlsKey
			}
			if f.Changed("tls-client-ca") {
				cfg.TLS.ClientCAFile = opts.tlsClientCA
			}
			if err := cfg.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServe(ctx, &cfg)
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
	for _, h := range serveFlagHooks {
		h(cmd)
	}
	return cmd
}

func runServe(ctx context.Context, cfg *serveConfig) error {
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
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	obs.WatchDiskFree(dataDir)

	env := &serveEnv{Logger: logger, Config: cfg, DataDir: dataDir, Ingest: true, mux: http.NewServeMux(), apiMux: http.NewServeMux()}

	busCfg := dispatch.BusConfig{StoreDir: filepath.Join(dataDir, "nats"), DataDir: dataDir, ConnectName: "dpersona-serve"}
	for _, h := range serveBusConfigHooks {
		if err := h(env, &busCfg); err != nil {
			return err
		}
	}
	openCtx, cancelOpen := context.WithTimeout(ctx, 60*time.Second)
	bus, err := dispatch.OpenBus(openCtx, busCfg, logger)
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
	defer bus.Close()
	env.Bus = bus
	env.AddReadyCheck(obs.Check{Name: "nats", Func: func(context.Context) error {
		if !bus.Conn().IsConnected() {
			return errors.New("not connected to NATS")
		}
		return nil
	}})

	var asm *assembly.Assembler
	env.api = httpapi.New(httpapi.StudySourceFunc(func(context.Context) ([]httpapi.Study, error) {
		if asm == nil {
			return nil, nil
		}
		return apiStudies(asm.Studies()), nil
	}), logger)

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	for _, h := range serveStartHooks {
		stop, err := h(runCtx, env)
		if err != nil {
			return err
		}
		if stop != nil {
			stops = append(stops, stop)
		}
	}
	for _, name := range cfg.unclaimedSections() {
		logger.Warn("configuration key not used by any role", "key", name)
	}

	var srv *gateway.Server
	var asmDone chan struct{}
	if env.Ingest {
		st, err := store.Open(dataDir, store.Options{})
		if err != nil {
			return err
		}
		asm, err = assembly.New(assembly.Config{Store: st, QuietWindow: time.Duration(cfg.QuietWindow), Sink: busSink{bus: bus, log: logger}, Logger: logger})
		if err != nil {
			return err
		}
		srv, err = gateway.NewServer(gateway.Config{Policy: cfg.policy(), MaxAssociations: cfg.MaxAssociations, UL: cfg.ulConfig(),
			MinFreeBytes: cfg.MinFreeMB << 20, MaxInstanceBytes: cfg.MaxInstanceMB << 20, Logger: logger}, st, asm)
		if err != nil {
			return err
		}
		env.AddReadyCheck(obs.DiskCheck(dataDir, cfg.MinFreeMB<<20))
		asmDone = make(chan struct{})
		go func() { asm.Run(runCtx); close(asmDone) }()
		var l, tl net.Listener
		if cfg.DICOMListen != "" {
			if l, err = net.Listen("tcp", cfg.DICOMListen); err != nil {
				return fmt.Errorf("DICOM listener: %w", err)
			}
		}
		if cfg.TLS.Listen != "" {
			tlsCfg, err := gateway.ServerTLSConfig(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ClientCAFile)
			if err != nil {
				if l != nil {
					l.Close()
				}
				return err
			}
			if tl, err = net.Listen("tcp", cfg.TLS.Listen); err != nil {
				if l != nil {
					l.Close()
				}
				return fmt.Errorf("DICOM TLS listener: %w", err)
			}
			go func() {
				if err := srv.ServeTLS(tl, tlsCfg); err != nil && !errors.Is(err, gateway.ErrServerClosed) {
					logger.Error("DICOM TLS listener stopped", "err", err)
				}
			}()
			logger.Info("DICOM TLS listener ready", "addr", tl.Addr().String(), "client_certificates_required", cfg.TLS.ClientCAFile != "")
		}
		if l != nil {
			go func() {
				if err := srv.Serve(l); err != nil && !errors.Is(err, gateway.ErrServerClosed) {
					logger.Error("DICOM listener stopped", "err", err)
				}
			}()
			logger.Info("DICOM listener ready", "addr", l.Addr().String(), "ae_titles", cfg.policy().AETitles, "data_dir", dataDir, "quiet_window", time.Duration(cfg.QuietWindow).String())
		}
	}

	var httpSrv *http.Server
	if cfg.HTTPListen != "" {
		env.api.Register(env.apiMux)
		token := cfg.APIToken
		if t := os.Getenv("DPERSONA_API_TOKEN"); t != "" {
			token = t
		}
		env.mux.Handle("/api/", obs.RequireBearer(token, env.apiMux))
		env.checksMu.Lock()
		checks := append([]obs.Check(nil), env.checks...)
		env.checksMu.Unlock()
		obs.Mount(env.mux, checks...)
		hl, err := net.Listen("tcp", cfg.HTTPListen)
		if err != nil {
			return fmt.Errorf("HTTP listener: %w", err)
		}
		httpSrv = &http.Server{Handler: env.mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute}
		go func() {
			if err := httpSrv.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("HTTP listener stopped", "err", err)
			}
		}()
		logger.Info("HTTP listener ready", "addr", hl.Addr().String())
	}

	<-ctx.Done()
	logger.Info("shutting down")
	shutCtx, cancelShut := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelShut()
	if srv != nil {
		if err := srv.Shutdown(shutCtx); err != nil {
			logger.Warn("DICOM listener shutdown", "err", err)
		}
	}
	cancelRun()
	if asmDone != nil {
		<-asmDone
	}
	if httpSrv != nil {
		httpSrv.Shutdown(shutCtx)
	}
	return nil
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

// busSink adapts the gateway's completed studies to the bus's study-complete events: a claim
// check with the instance paths (made relative to the data directory by the bus).
type busSink struct {
	bus *dispatch.Bus
	log *slog.Logger
}

func (s busSink) StudyComplete(ctx context.Context, cs gateway.CompletedStudy) error {
	if err := s.bus.PublishStudyComplete(ctx, toStudyComplete(cs)); err != nil {
		return err
	}
	obs.StudiesCompleted.Inc()
	if !cs.FirstReceivedAt.IsZero() && cs.CompletedAt.After(cs.FirstReceivedAt) {
		obs.StudyStageSeconds.With(obs.StageReceive).Observe(cs.CompletedAt.Sub(cs.FirstReceivedAt).Seconds())
	}
	return nil
}

func toStudyComplete(cs gateway.CompletedStudy) dispatch.StudyComplete {
	ev := dispatch.StudyComplete{CalledAE: cs.CalledAE, CallingAE: cs.CallingAE, StudyInstanceUID: cs.StudyInstanceUID, Dir: cs.Dir, CompletedAt: cs.CompletedAt.UTC()}
	for _, se := range cs.Series {
		ref := dispatch.SeriesRef{SeriesInstanceUID: se.SeriesInstanceUID, Modality: se.Modality}
		for _, in := range se.Instances {
			ref.Instances = append(ref.Instances, dispatch.InstanceRef{SOPInstanceUID: in.SOPInstanceUID, SOPClassUID: in.SOPClassUID, Path: in.Path, Size: in.Size})
		}
		ev.Series = append(ev.Series, ref)
	}
	return ev
}

// apiStudies converts the assembler's snapshot to the API's entries.
func apiStudies(in []assembly.StudyInfo) []httpapi.Study {
	out := make([]httpapi.Study, 0, len(in))
	for _, s := range in {
		st := httpapi.Study{StudyInstanceUID: s.StudyInstanceUID, CalledAE: s.CalledAE, CallingAE: s.CallingAE, State: s.State, Instances: s.Instances,
			Series: make([]httpapi.Series, 0, len(s.Series)), Extra: map[string]any{"handed_off": s.HandedOff}}
		for _, se := range s.Series {
			st.Series = append(st.Series, httpapi.Series{SeriesInstanceUID: se.SeriesInstanceUID, Modality: se.Modality, Instances: se.Instances})
		}
		first, last := s.FirstReceived, s.LastReceived
		st.FirstReceivedAt, st.LastReceivedAt = &first, &last
		if !s.CompletedAt.IsZero() {
			c := s.CompletedAt
			st.CompletedAt = &c
		}
		if s.LastError != "" {
			st.Extra["hand_off_error"] = s.LastError
		}
		out = append(out, st)
	}
	return out
}
