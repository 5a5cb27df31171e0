package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"dpersona/dispatch"
	"dpersona/inference"
	"dpersona/internal/httpapi"
	"dpersona/internal/obs"
	"dpersona/pipeline"
)

// The inference and dispatch roles of `serve`, and the bus options they share with ingest.
// Registered through serve.go's hooks so serve.go does not change when roles do.
func init() {
	serveFlagHooks = append(serveFlagHooks, registerRoleFlags)
	serveBusConfigHooks = append(serveBusConfigHooks, applyRoleBusConfig)
	serveStartHooks = append(serveStartHooks, startRoles)
}

// Role names for --roles.
const (
	roleIngest   = "ingest"
	roleInfer    = "infer"
	roleDispatch = "dispatch"
)

// roleFlags are the flags of the roles; one serve runs per process, so package state is fine.
type roleFlags struct {
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
	changed   func(name string) bool
}

var roleOpts roleFlags

func registerRoleFlags(cmd *cobra.Command) {
	roleOpts = roleFlags{changed: cmd.Flags().Changed}
	f := cmd.Flags()
	f.StringSliceVar(&roleOpts.roles, "roles", []string{roleIngest, roleInfer, roleDispatch},
		"roles this process runs: ingest (DICOM listener, study assembly), infer (model workers), dispatch (export to destinations)")
	f.StringVar(&roleOpts.natsURL, "nats-url", "", "join an external NATS JetStream cluster (comma-separated URLs) instead of the embedded server")
	f.IntVar(&roleOpts.natsPort, "nats-port", 0, "let the embedded NATS server accept other processes on 127.0.0.1:PORT (0: in-process only)")
	f.StringVar(&roleOpts.natsCreds, "nats-creds", "", "NATS credentials file for --nats-url")
	f.StringVar(&roleOpts.natsCA, "nats-ca", "", "CA bundle to verify the NATS servers (TLS)")
	f.StringVar(&roleOpts.natsCert, "nats-cert", "", "client certificate for NATS mutual TLS")
	f.StringVar(&roleOpts.natsKey, "nats-key", "", "client key for NATS mutual TLS")
	f.IntVar(&roleOpts.replicas, "nats-replicas", 0, "replicas of streams, KV and object stores (1 embedded; 3 on a 3-node cluster)")
	f.BoolVar(&roleOpts.upload, "upload-instances", false, "also put received instances in the JetStream object store (workers on machines without the data directory)")
	f.StringArrayVar(&roleOpts.forwardTo, "forward-to", nil, "send every result with C-STORE to AET@HOST:PORT (repeatable)")
	f.StringArrayVar(&roleOpts.stowTo, "stow-to", nil, "send every result with DICOMweb STOW-RS to this DICOMweb root URL (repeatable)")
	f.IntVar(&roleOpts.workers, "workers", 1, "studies one inference role processes at once")
	if cmd.Flags().Lookup("model") == nil {
		roleOpts.model.register(cmd, true)
	}
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

func applyRoleBusConfig(env *serveEnv, cfg *dispatch.BusConfig) error {
	var ns natsSection
	if _, err := env.Config.Section("nats", &ns); err != nil {
		return err
	}
	set := func(dst *string, flag, flagVal, cfgVal string) {
		if roleOpts.changed != nil && roleOpts.changed(flag) {
			*dst = flagVal
		} else if cfgVal != "" {
			*dst = cfgVal
		}
	}
	set(&cfg.URL, "nats-url", roleOpts.natsURL, ns.URL)
	set(&cfg.CredsFile, "nats-creds", roleOpts.natsCreds, ns.CredsFile)
	set(&cfg.TLSCAFile, "nats-ca", roleOpts.natsCA, ns.TLSCA)
	set(&cfg.TLSCertFile, "nats-cert", roleOpts.natsCert, ns.TLSCert)
	set(&cfg.TLSKeyFile, "nats-key", roleOpts.natsKey, ns.TLSKey)
	cfg.ListenPort = ns.ListenPort
	if roleOpts.natsPort != 0 {
		cfg.ListenPort = roleOpts.natsPort
	}
	cfg.Replicas = ns.Replicas
	if roleOpts.replicas != 0 {
		cfg.Replicas = roleOpts.replicas
	}
	cfg.UploadInstances = ns.UploadInstances || roleOpts.upload
	cfg.SyncAlways = ns.SyncAlways
	return nil
}

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

// loadRouting reads "routes" and "destinations" from the config and adds --forward-to and
// --stow-to. Without routes, every CT series goes through the default model to every destination.
func loadRouting(env *serveEnv, defaultModel string) (dispatch.Routing, error) {
	var r dispatch.Routing
	hasRoutes, err := env.Config.Section("routes", &r.Routes)
	if err != nil {
		return r, err
	}
	if _, err := env.Config.Section("destinations", &r.Destinations); err != nil {
		return r, err
	}
	var extra []dispatch.Destination
	for i, s := range roleOpts.forwardTo {
		d, err := dispatch.ParseForwardTo(s)
		if err != nil {
			return r, err
		}
		if i > 0 {
			d.Name = fmt.Sprintf("forward%d", i+1)
		}
		extra = append(extra, d)
	}
	for i, u := range roleOpts.stowTo {
		name := "stow"
		if i > 0 {
			name = fmt.Sprintf("stow%d", i+1)
		}
		extra = append(extra, dispatch.Destination{Name: name, Kind: dispatch.KindSTOW, URL: u})
	}
	r.Destinations = append(r.Destinations, extra...)
	if !hasRoutes {
		r.Routes = dispatch.DefaultRouting(defaultModel, r.Destinations...).Routes
	} else {
		for i := range r.Routes {
			if r.Routes[i].Model == "" {
				r.Routes[i].Model = defaultModel
			}
			// Flag destinations are added to every configured route.
			for _, d := range extra {
				r.Routes[i].Destinations = append(r.Routes[i].Destinations, d.Name)
			}
		}
	}
	return r, r.Validate()
}

// startRoles starts the inference and export workers this process runs, overlays the bus's
// study states on GET /api/studies and serves GET /api/dead-letters.
func startRoles(ctx context.Context, env *serveEnv) (func(), error) {
	roles, err := parseRoles(roleOpts.roles)
	if err != nil {
		return nil, err
	}
	env.Ingest = roles.ingest
	log := env.Logger
	bus := env.Bus
	bus.SetObserver(dispatch.Observer{
		SeriesProcessed: func(d time.Duration) { obs.InferenceSeconds.Observe(d.Seconds()) },
		InferenceFailed: func() { obs.InferenceFailures.Inc() },
		StudyInferred:   func(d time.Duration) { obs.StudyStageSeconds.With(obs.StageInfer).Observe(d.Seconds()) },
		FilesExported:   func(dest string, n int) { obs.ExportsTotal.With(dest).Add(float64(n)) },
		ExportFailed:    func(dest string) { obs.ExportFailures.With(dest).Inc() },
		StudyDelivered:  func(d time.Duration) { obs.StudyStageSeconds.With(obs.StageExport).Observe(d.Seconds()) },
	})
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
	env.AddStudyOverlay(busOverlay(bus))
	env.HandleAPI("GET /api/dead-letters", deadLettersHandler(bus))
	env.HandleAPI("POST /api/dead-letters/{seq}/replay", replayHandler(bus))

	var ws workerSection
	if _, err := env.Config.Section("workers", &ws); err != nil {
		return nil, err
	}
	modelDir, modelErr := resolveModelDir(roleOpts.model.Model)
	if modelErr != nil {
		modelDir = defaultModelDir
	}
	routing, err := loadRouting(env, modelDir)
	if err != nil {
		return nil, err
	}

	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	run := func(what string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(rctx); err != nil && rctx.Err() == nil {
				log.Error("role stopped", "what", what, "err", err)
			}
		}()
	}
	var closers []func()
	stop := func() {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			log.Warn("workers did not stop within 30s")
		}
		for _, c := range closers {
			c()
		}
	}
	wg.Add(1)
	go func() { defer wg.Done(); bus.WatchStudyStates(rctx) }()
	mover := false
	if roles.infer {
		proc, closeProc, err := openProcessor(routing, log)
		switch {
		case err != nil && errors.Is(err, errNoModel):
			// Ingest keeps working and studies wait durably in the queue (state "received") until
			// an inference role with a model joins; say so once, loudly.
			log.Error("inference role is OFF: no model bundle", "reason", err.Error(),
				"hint", "put a bundle at "+defaultModelDir+" or pass --model; received studies wait in the queue")
			// An inference role without a model must not look ready to an orchestrator.
			env.AddReadyCheck(obs.Check{Name: "model", Func: func(context.Context) error { return err }})
		case err != nil:
			cancel()
			return nil, err
		default:
			// openProcessor verified, loaded and warmed up every routed bundle before this point.
			env.AddReadyCheck(obs.Check{Name: "model", Func: func(context.Context) error { return nil }})
			closers = append(closers, closeProc)
			opt := dispatch.InferOptions{Routing: routing, Processor: proc, Concurrency: roleOpts.workers,
				Timeout: time.Duration(ws.InferTimeout), MaxDeliver: ws.InferMaxAttempts, AckWait: time.Duration(ws.AckWait)}
			run("inference worker", func(c context.Context) error { return bus.RunInferWorker(c, opt) })
			mover = true
		}
	}
	if roles.dispatch {
		for _, d := range routing.Destinations {
			var exp dispatch.Exporter
			switch d.Kind {
			case dispatch.KindDICOM:
				exp = dispatch.NewCStoreExporter(d, env.Config.AETitle)
			case dispatch.KindSTOW:
				exp = &dispatch.STOWExporter{URL: d.URL, BearerToken: d.BearerToken}
			}
			opt := dispatch.ExportOptions{Destination: d, Exporter: exp, MaxDeliver: ws.ExportAttempts, AckWait: time.Duration(ws.AckWait)}
			run("export worker "+d.Name, func(c context.Context) error { return bus.RunExportWorker(c, opt) })
		}
		mover = true
	}
	if mover {
		run("dead-letter mover", bus.RunDeadLetterMover)
	}
	var dests []string
	for _, d := range routing.Destinations {
		dests = append(dests, d.Name+"="+d.Kind)
	}
	log.Info("roles started", "ingest", roles.ingest, "infer", roles.infer, "dispatch", roles.dispatch,
		"routes", len(routing.Routes), "destinations", strings.Join(dests, ","), "nats", orEmbedded(bus.ClientURL()))
	return stop, nil
}

func orEmbedded(url string) string {
	if url == "" {
		return "embedded (in-process)"
	}
	return url
}

var errNoModel = errors.New("no model bundle")

// pipelineProcessor adapts the pipeline to the inference worker: routes name bundle
// directories, the pipeline selects engines by manifest name.
type pipelineProcessor struct {
	proc     *pipeline.Processor
	names    map[string]string // bundle dir -> manifest name
	versions map[string]string // bundle dir -> "name version"
}

// openProcessor loads every bundle the routes name (checksums verified) into one pipeline.
func openProcessor(routing dispatch.Routing, log *slog.Logger) (*pipelineProcessor, func(), error) {
	var dirs []string
	seen := map[string]bool{}
	for _, r := range routing.Routes {
		if !seen[r.Model] {
			seen[r.Model] = true
			dirs = append(dirs, r.Model)
		}
	}
	sort.Strings(dirs)
	p := &pipelineProcessor{names: map[string]string{}, versions: map[string]string{}}
	var engines []*inference.Engine
	closeAll := func() {
		for _, e := range engines {
			e.Close()
		}
	}
	byName := map[string]string{}
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("%w at %s (%v)", errNoModel, dir, err)
		}
		e, err := roleOpts.model.openEngine(dir, log)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("model %s: %w", dir, err)
		}
		engines = append(engines, e)
		m := e.Bundle().Manifest
		if other, dup := byName[m.Name]; dup {
			closeAll()
			return nil, nil, fmt.Errorf("models %s and %s have the same manifest name %q", other, dir, m.Name)
		}
		byName[m.Name] = dir
		p.names[dir] = m.Name
		p.versions[dir] = m.Name + " " + m.Version
		warm := time.Now()
		if err := warmUp(e); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("model %s: warm-up run failed: %w", dir, err)
		}
		log.Info("model loaded", "dir", dir, "model", m.Name, "version", m.Version, "device", e.Device(),
			"warm_up_ms", time.Since(warm).Milliseconds())
		if note := e.DeviceNote(); note != "" {
			log.Warn(note)
		}
	}
	if len(engines) == 0 {
		return nil, nil, fmt.Errorf("%w: no route names a model", errNoModel)
	}
	p.proc = pipeline.New(engines[0], engines[1:]...)
	p.proc.SoftwareVersion = "dpersona " + version
	p.proc.Logger = log
	return p, closeAll, nil
}

// warmUp runs one full batch of blank tiles through every session before the first study: the
// first runs of an onnxruntime session are much slower (allocation, kernel selection), and a
// study should not pay for that (on the shared 2-core dev machine the first 7-slice study of a
// fresh gateway took 17.6 s of model time, the next three 10.2 to 11.7 s).
func warmUp(e *inference.Engine) error {
	m := e.Bundle().Manifest
	n := e.BatchSize()
	tiles := make([]float32, n*m.Input.Channels*m.Input.Height*m.Input.Width)
	noise := inference.StudyNoise("warm-up", 0, m.Defaults.Samples, m.Defaults.BankSize, m.LatentSize)
	errs := make(chan error, e.Sessions())
	for i := 0; i < e.Sessions(); i++ {
		go func() {
			_, err := e.Predict(context.Background(), tiles, n, noise)
			errs <- err
		}()
	}
	var first error
	for i := 0; i < e.Sessions(); i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (p *pipelineProcessor) ModelVersion(model string) (string, error) {
	v, ok := p.versions[model]
	if !ok {
		return "", fmt.Errorf("model %s is not loaded in this worker", model)
	}
	return v, nil
}

func (p *pipelineProcessor) Process(ctx context.Context, job dispatch.Job) ([]dispatch.SEG, error) {
	var outs []pipeline.Output
	for _, o := range job.Outputs {
		outs = append(outs, pipeline.Output(o))
	}
	res, err := p.proc.Process(ctx, pipeline.Request{SeriesFiles: job.Files, StudyInstanceUID: job.StudyInstanceUID,
		Model: p.names[job.Model], Outputs: outs})
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		// The pipeline failed on this series (unreadable input, geometry the model cannot take,
		// an encoding error): the same input fails the same way, so it is not retried.
		var f *pipeline.Failure
		if errors.As(err, &f) {
			return nil, dispatch.Permanent(err)
		}
		return nil, err
	}
	var segs []dispatch.SEG
	for _, s := range res.SEGs {
		segs = append(segs, dispatch.SEG{Output: string(s.Output), SOPInstanceUID: s.SOPInstanceUID,
			Segments: s.Segments, Frames: s.Frames, Data: s.Data})
	}
	return segs, nil
}

// busOverlay puts the bus's later states (received, inferring, exporting, done, failed) over the
// gateway's (receiving, complete), with the reason and the per-file results, and adds studies
// only the bus knows (ingested by another process).
func busOverlay(bus *dispatch.Bus) httpapi.Overlay {
	return httpapi.OverlayFunc(func(ctx context.Context, studies []httpapi.Study) ([]httpapi.Study, error) {
		states, err := bus.StudyStates(ctx)
		if err != nil {
			return nil, err
		}
		index := map[string]int{}
		for i, s := range studies {
			index[dispatch.StudyKey(s.CalledAE, s.StudyInstanceUID)] = i
		}
		for _, st := range states {
			i, ok := index[dispatch.StudyKey(st.CalledAE, st.StudyInstanceUID)]
			if !ok {
				s := httpapi.Study{StudyInstanceUID: st.StudyInstanceUID, CalledAE: st.CalledAE, CallingAE: st.CallingAE,
					State: st.State, Instances: st.Instances}
				for _, se := range st.Series {
					s.Series = append(s.Series, httpapi.Series{SeriesInstanceUID: se.SeriesInstanceUID, Modality: se.Modality, Instances: se.Instances})
				}
				studies = append(studies, s)
				i = len(studies) - 1
			} else if studies[i].State != "receiving" && st.State != dispatch.StateReceived {
				// "receiving" wins: the study is getting new instances and will be published again.
				// The gateway's "complete" (handed to the bus) already says what "received" says.
				studies[i].State = st.State
			}
			s := &studies[i]
			if s.Extra == nil {
				s.Extra = map[string]any{}
			}
			if st.Reason != "" {
				s.Extra["reason"] = st.Reason
			}
			if len(st.Results) > 0 {
				s.Extra["results"] = st.Results
			}
			if st.Attempts > 0 {
				s.Extra["attempts"] = st.Attempts
			}
			if st.Worker != "" {
				s.Extra["worker"] = st.Worker
			}
			s.Extra["event_id"] = st.EventID
			if st.InferredAt != nil {
				s.Extra["inferred_at"] = st.InferredAt
			}
			if st.DoneAt != nil {
				s.Extra["done_at"] = st.DoneAt
			}
		}
		return studies, nil
	})
}

// deadLettersHandler lists the dead-letter stream: what failed for good, and why.
func deadLettersHandler(bus *dispatch.Bus) http.Handler {
	type entry struct {
		Seq         uint64 `json:"seq"`
		Kind        string `json:"kind"`
		StudyKey    string `json:"study_key,omitempty"`
		Destination string `json:"destination,omitempty"`
		Source      string `json:"source"`
		Reason      string `json:"reason"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dls, err := bus.DeadLetters(r.Context())
		if err != nil {
			http.Error(w, "dead letters: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		out := make([]entry, 0, len(dls))
		for _, d := range dls {
			kind := strings.TrimPrefix(d.Subject, dispatch.SubjectDeadPrefix)
			if i := strings.IndexByte(kind, '.'); i >= 0 {
				kind = kind[:i]
			}
			out = append(out, entry{Seq: d.Seq, Kind: kind, StudyKey: d.StudyKey, Destination: d.Destination, Source: d.Source, Reason: d.Reason})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
}

// replayHandler puts one dead letter back on its work queue (after its cause was fixed).
func replayHandler(bus *dispatch.Bus) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
		if err != nil || seq == 0 {
			http.Error(w, "dead letter sequence must be a positive integer", http.StatusBadRequest)
			return
		}
		switch err := bus.ReplayDeadLetter(r.Context(), seq); {
		case errors.Is(err, dispatch.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusConflict)
		default:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"replayed": seq})
		}
	})
}
