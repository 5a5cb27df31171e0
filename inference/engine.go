package inference

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// Graph tensor names fixed by docs/model-bundle.md.
const (
	InputImage       = "image"
	InputEpsSamples  = "eps_samples"
	InputEpsBank     = "eps_bank"
	OutputSampleProb = "sample_probs"
	OutputRaterProb  = "rater_probs"
)

// EngineOptions configure the onnxruntime sessions of an Engine.
type EngineOptions struct {
	// LibraryPath is the onnxruntime shared library; empty = ResolveLibraryPath("").
	LibraryPath string
	// Device is "cpu" (default) or "cuda:N". When the library or machine lacks CUDA the engine
	// falls back to the CPU and says why in Engine.DeviceNote.
	Device string
	// IntraOpThreads per session; 0 = the CPU count divided by Sessions (at least 1).
	IntraOpThreads int
	// Sessions is the pool size: how many graph runs may proceed at once (slices of a study, or
	// concurrent studies). 0 = automatic: on the CPU, one single-threaded session per CPU (at most
	// autoSessions), because this graph's many small convolutions parallelise better across runs
	// than within one (on 2 cores, 2 sessions of 1 thread did a 28-slice CT in 0.78x the time of 1
	// session of 2 threads); on CUDA, 1. Sessions * IntraOpThreads is capped at the CPU count so
	// that cores are not oversubscribed.
	Sessions int
	// BatchSize is the most tiles per graph run; 0 = 8.
	BatchSize int
	// Spin lets idle intra-op threads busy-wait for work (onnxruntime's default). It lowers
	// latency on an otherwise idle machine but burns cores that other work on a shared machine
	// (the gateway, NATS, a second session) needs, so it is off unless asked for.
	Spin   bool
	Logger *slog.Logger
}

// Engine serves both D-Persona stages of one bundle from a pool of onnxruntime sessions. It is
// safe for concurrent use.
type Engine struct {
	bundle     *Bundle
	pool       chan *graphSession
	sessions   []*graphSession
	device     string
	deviceNote string
	threads    int
	batch      int
	c, h, w    int
	latent     int
	raters     int
}

type graphSession struct {
	s   *ort.DynamicAdvancedSession
	run *ort.RunOptions
}

// NewEngine loads the runtime (once per process) and creates the session pool for b.
func NewEngine(b *Bundle, opts EngineOptions) (*Engine, error) {
	model := b.Label()
	lib := opts.LibraryPath
	if lib == "" {
		lib = ResolveLibraryPath("")
	}
	if _, err := InitRuntime(lib); err != nil {
		return nil, &BundleError{Model: model, Err: err}
	}
	cpus := runtime.NumCPU()
	sessions := opts.Sessions
	if sessions <= 0 {
		sessions = 1
		if !strings.HasPrefix(opts.Device, "cuda") {
			sessions = min(cpus, autoSessions) // fewer below when IntraOpThreads asks for more
		}
	}
	if sessions > cpus {
		sessions = cpus
	}
	threads := opts.IntraOpThreads
	if threads <= 0 {
		threads = max(1, cpus/sessions)
	}
	if sessions*threads > cpus && sessions > 1 {
		// Keep the requested threads per run; fewer concurrent runs avoid oversubscription.
		sessions = max(1, cpus/threads)
	}
	batch := opts.BatchSize
	if batch <= 0 {
		batch = 8
	}
	m := b.Manifest
	e := &Engine{
		bundle: b, threads: threads, batch: batch,
		c: m.Input.Channels, h: m.Input.Height, w: m.Input.Width,
		latent: m.LatentSize, raters: len(m.Raters),
	}
	graph, err := os.ReadFile(b.ONNXPath())
	if err != nil {
		return nil, &BundleError{Model: model, Err: fmt.Errorf("reading graph: %w", err)}
	}
	// Re-check the bytes handed to onnxruntime: the bundle may have changed since LoadBundle.
	sum := sha256.Sum256(graph)
	if hex.EncodeToString(sum[:]) != strings.ToLower(m.Files[m.ONNX]) {
		return nil, &BundleError{Model: model, Err: fmt.Errorf("file %s: %w since the bundle was loaded", m.ONNX, ErrChecksum)}
	}
	if err := e.checkGraphSignature(graph); err != nil {
		return nil, &BundleError{Model: model, Err: err}
	}
	device, useCUDA, cudaID, err := parseDevice(opts.Device)
	if err != nil {
		return nil, &BundleError{Model: model, Err: err}
	}
	e.device = device
	for i := 0; i < sessions; i++ {
		gs, note, err := newGraphSession(graph, threads, opts.Spin, useCUDA, cudaID)
		if err != nil {
			e.Close()
			return nil, &BundleError{Model: model, Err: err}
		}
		if note != "" {
			useCUDA = false
			e.device = "cpu"
			e.deviceNote = note
		}
		e.sessions = append(e.sessions, gs)
	}
	e.pool = make(chan *graphSession, len(e.sessions))
	for _, s := range e.sessions {
		e.pool <- s
	}
	if opts.Logger != nil {
		opts.Logger.Info("inference engine ready", "model", m.Name, "version", m.Version,
			"device", e.device, "sessions", len(e.sessions), "intra_op_threads", threads, "batch", batch)
		if e.deviceNote != "" {
			opts.Logger.Warn("CUDA not available, using the CPU", "model", m.Name, "reason", e.deviceNote)
		}
	}
	return e, nil
}

func parseDevice(d string) (name string, cuda bool, id int, err error) {
	switch {
	case d == "" || d == "cpu":
		return "cpu", false, 0, nil
	case d == "cuda":
		return "cuda:0", true, 0, nil
	case strings.HasPrefix(d, "cuda:"):
		id, err := strconv.Atoi(strings.TrimPrefix(d, "cuda:"))
		if err != nil || id < 0 {
			return "", false, 0, fmt.Errorf("device %q: expected cpu or cuda:N", d)
		}
		return d, true, id, nil
	}
	return "", false, 0, fmt.Errorf("device %q: expected cpu or cuda:N", d)
}

// newGraphSession creates one session. When CUDA is asked for but cannot be appended (a CPU-only
// library, no driver, no such device), it builds a CPU session instead and returns the reason.
func newGraphSession(graph []byte, threads int, spin, useCUDA bool, cudaID int) (*graphSession, string, error) {
	var note string
	build := func(cuda bool) (*ort.DynamicAdvancedSession, error) {
		so, err := ort.NewSessionOptions()
		if err != nil {
			return nil, fmt.Errorf("session options: %w", err)
		}
		defer so.Destroy()
		if err := so.SetIntraOpNumThreads(threads); err != nil {
			return nil, fmt.Errorf("intra-op threads: %w", err)
		}
		if err := so.SetInterOpNumThreads(1); err != nil {
			return nil, fmt.Errorf("inter-op threads: %w", err)
		}
		allow := "0"
		if spin {
			allow = "1"
		}
		if err := so.AddSessionConfigEntry("session.intra_op.allow_spinning", allow); err != nil {
			return nil, fmt.Errorf("intra-op spinning: %w", err)
		}
		if cuda {
			co, err := ort.NewCUDAProviderOptions()
			if err != nil {
				return nil, fmt.Errorf("CUDA provider options: %w", err)
			}
			defer co.Destroy()
			if err := co.Update(map[string]string{"device_id": strconv.Itoa(cudaID)}); err != nil {
				return nil, fmt.Errorf("CUDA provider options: %w", err)
			}
			if err := so.AppendExecutionProviderCUDA(co); err != nil {
				return nil, fmt.Errorf("CUDA execution provider: %w", err)
			}
		}
		s, err := ort.NewDynamicAdvancedSessionWithONNXData(graph,
			[]string{InputImage, InputEpsSamples, InputEpsBank},
			[]string{OutputSampleProb, OutputRaterProb}, so)
		if err != nil {
			return nil, fmt.Errorf("creating onnxruntime session: %w", err)
		}
		return s, nil
	}
	s, err := build(useCUDA)
	if err != nil && useCUDA {
		note = fmt.Sprintf("cuda:%d unavailable (%v); fell back to the CPU", cudaID, err)
		s, err = build(false)
	}
	if err != nil {
		return nil, "", err
	}
	ro, err := ort.NewRunOptions()
	if err != nil {
		s.Destroy()
		return nil, "", fmt.Errorf("run options: %w", err)
	}
	return &graphSession{s: s, run: ro}, note, nil
}

// checkGraphSignature compares the graph's inputs and outputs with the contract and the manifest
// (channels, tile size), so that a mismatched bundle fails at load, not on the first study.
func (e *Engine) checkGraphSignature(graph []byte) error {
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(graph)
	if err != nil {
		return fmt.Errorf("reading graph inputs/outputs: %w", err)
	}
	byName := map[string]ort.InputOutputInfo{}
	for _, x := range append(append([]ort.InputOutputInfo{}, ins...), outs...) {
		byName[x.Name] = x
	}
	want := []struct {
		name  string
		shape []int64 // -1 = dynamic (any), otherwise must match when static
	}{
		{InputImage, []int64{-1, int64(e.c), int64(e.h), int64(e.w)}},
		{InputEpsSamples, []int64{-1, -1, int64(e.latent)}},
		{InputEpsBank, []int64{-1, -1, int64(e.latent)}},
		{OutputSampleProb, []int64{-1, -1, int64(e.h), int64(e.w)}},
		{OutputRaterProb, []int64{-1, int64(e.raters), int64(e.h), int64(e.w)}},
	}
	for _, w := range want {
		info, ok := byName[w.name]
		if !ok {
			return fmt.Errorf("graph has no tensor %q (inputs %v, outputs %v)", w.name, names(ins), names(outs))
		}
		if info.DataType != ort.TensorElementDataTypeFloat {
			return fmt.Errorf("graph tensor %q is %v, want float32", w.name, info.DataType)
		}
		if len(info.Dimensions) != len(w.shape) {
			return fmt.Errorf("graph tensor %q has shape %v, want %d dimensions", w.name, info.Dimensions, len(w.shape))
		}
		for i, d := range w.shape {
			got := info.Dimensions[i]
			if d >= 0 && got >= 0 && got != d {
				return fmt.Errorf("graph tensor %q has shape %v, but the manifest implies %v (dimension %d)", w.name, info.Dimensions, w.shape, i)
			}
		}
	}
	return nil
}

func names(xs []ort.InputOutputInfo) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x.Name)
	}
	return out
}

// Bundle returns the engine's model.
func (e *Engine) Bundle() *Bundle { return e.bundle }

// Device is the execution device actually in use ("cpu" or "cuda:N").
func (e *Engine) Device() string { return e.device }

// DeviceNote explains a CPU fallback; empty when the requested device is in use.
func (e *Engine) DeviceNote() string { return e.deviceNote }

// autoSessions bounds the automatic pool: each session keeps its own buffers (about 0.2 GB at a
// batch of 12 tiles of the lite model), and beyond a handful of concurrent runs a study has too
// few slices in flight to use more.
const autoSessions = 8

// Threads is the intra-op thread count per session; Sessions the pool size.
func (e *Engine) Threads() int  { return e.threads }
func (e *Engine) Sessions() int { return len(e.sessions) }

// BatchSize is the most tiles per graph run.
func (e *Engine) BatchSize() int { return e.batch }

// Close releases every session. The engine must be idle.
func (e *Engine) Close() error {
	var errs []error
	for _, s := range e.sessions {
		if s.run != nil {
			s.run.Destroy()
		}
		if err := s.s.Destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	e.sessions = nil
	return errors.Join(errs...)
}

// Run executes the graph once on n tiles: image [n,C,H,W], epsSamples [n,s,L], epsBank [n,k,L].
// It returns sample_probs [n,s,H,W] and rater_probs [n,R,H,W]. Outputs are checked for NaN/Inf.
func (e *Engine) Run(ctx context.Context, image []float32, n int, epsSamples []float32, s int, epsBank []float32, k int) (sampleProbs, raterProbs []float32, err error) {
	model := e.bundle.Label()
	fail := func(err error) ([]float32, []float32, error) { return nil, nil, &BundleError{Model: model, Err: err} }
	hw := e.h * e.w
	switch {
	case n < 1 || s < 1 || k < 1:
		return fail(fmt.Errorf("tiles %d, samples %d and bank size %d must be positive", n, s, k))
	case len(image) != n*e.c*hw:
		return fail(fmt.Errorf("input image has %d values, the model takes [%d,%d,%d,%d] = %d (wrong channels or shape)", len(image), n, e.c, e.h, e.w, n*e.c*hw))
	case len(epsSamples) != n*s*e.latent:
		return fail(fmt.Errorf("eps_samples has %d values, want [%d,%d,%d]", len(epsSamples), n, s, e.latent))
	case len(epsBank) != n*k*e.latent:
		return fail(fmt.Errorf("eps_bank has %d values, want [%d,%d,%d]", len(epsBank), n, k, e.latent))
	}
	if i := firstNonFinite(image); i >= 0 {
		return fail(fmt.Errorf("input image value %d is %v", i, image[i]))
	}
	sampleProbs = make([]float32, n*s*hw)
	raterProbs = make([]float32, n*e.raters*hw)
	tensors := make([]ort.Value, 0, 5)
	defer func() {
		for _, t := range tensors {
			t.Destroy()
		}
	}()
	add := func(shape ort.Shape, data []float32) error {
		t, err := ort.NewTensor(shape, data)
		if err != nil {
			return err
		}
		tensors = append(tensors, t)
		return nil
	}
	for _, a := range []struct {
		shape ort.Shape
		data  []float32
	}{
		{ort.NewShape(int64(n), int64(e.c), int64(e.h), int64(e.w)), image},
		{ort.NewShape(int64(n), int64(s), int64(e.latent)), epsSamples},
		{ort.NewShape(int64(n), int64(k), int64(e.latent)), epsBank},
		{ort.NewShape(int64(n), int64(s), int64(e.h), int64(e.w)), sampleProbs},
		{ort.NewShape(int64(n), int64(e.raters), int64(e.h), int64(e.w)), raterProbs},
	} {
		if err := add(a.shape, a.data); err != nil {
			return fail(fmt.Errorf("creating tensor: %w", err))
		}
	}
	var gs *graphSession
	select {
	case gs = <-e.pool:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	defer func() { e.pool <- gs }()
	gs.run.UnsetTerminate()
	terminated := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		gs.run.Terminate()
		close(terminated)
	})
	err = gs.s.RunWithOptions(tensors[:3], tensors[3:], gs.run)
	if !stop() {
		// The terminate call has started: let it finish before the session goes back to the
		// pool, or it could cancel the next caller's run.
		<-terminated
	}
	if err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(fmt.Errorf("onnxruntime run on %d tiles: %w", n, err))
	}
	if i := firstNonFinite(sampleProbs); i >= 0 {
		return fail(fmt.Errorf("output %s is not finite (%v) at tile %d sample %d", OutputSampleProb, sampleProbs[i], i/(s*hw), (i/hw)%s))
	}
	if i := firstNonFinite(raterProbs); i >= 0 {
		return fail(fmt.Errorf("output %s is not finite (%v) at tile %d rater %d", OutputRaterProb, raterProbs[i], i/(e.raters*hw), (i/hw)%e.raters))
	}
	return sampleProbs, raterProbs, nil
}

func firstNonFinite(v []float32) int {
	for i, x := range v {
		// x-x is NaN for both NaN and ±Inf; one comparison per value keeps the scan cheap.
		if x-x != 0 {
			return i
		}
	}
	return -1
}

// Prediction holds the graph outputs for n tiles of one study.
type Prediction struct {
	N, S, R, H, W int
	SampleProbs   []float32 // [N,S,H,W]
	RaterProbs    []float32 // [N,R,H,W]
}

// Tile returns the sample and rater probability maps of tile i ([S*H*W] and [R*H*W]).
func (p *Prediction) Tile(i int) (samples, raters []float32) {
	hw := p.H * p.W
	return p.SampleProbs[i*p.S*hw : (i+1)*p.S*hw], p.RaterProbs[i*p.R*hw : (i+1)*p.R*hw]
}

// Predict runs both stages on n tiles (image [n,C,H,W], already intensity-mapped) in batches of
// BatchSize, using the same study noise for every tile so that sample j is the same latent draw
// across all tiles and slices of a study.
func (e *Engine) Predict(ctx context.Context, image []float32, n int, noise Noise) (*Prediction, error) {
	if noise.L != e.latent {
		return nil, &BundleError{Model: e.bundle.Label(), Err: fmt.Errorf("noise latent size %d, model latent_size %d", noise.L, e.latent)}
	}
	chw := e.c * e.h * e.w
	if n < 1 || len(image) != n*chw {
		return nil, &BundleError{Model: e.bundle.Label(), Err: fmt.Errorf("input image has %d values for %d tiles, the model takes %d per tile [%d,%d,%d] (wrong channels or shape)", len(image), n, chw, e.c, e.h, e.w)}
	}
	hw := e.h * e.w
	p := &Prediction{N: n, S: noise.S, R: e.raters, H: e.h, W: e.w,
		SampleProbs: make([]float32, n*noise.S*hw), RaterProbs: make([]float32, n*e.raters*hw)}
	// Split n tiles into the fewest runs of at most BatchSize, of near-equal size (25 tiles at
	// batch 8 run as 7+6+6+6, not 8+8+8+1).
	runs := (n + e.batch - 1) / e.batch
	for r, start := 0, 0; r < runs; r++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m := (n - start) / (runs - r)
		if (n-start)%(runs-r) != 0 {
			m++
		}
		sp, rp, err := e.Run(ctx, image[start*chw:(start+m)*chw], m,
			repeat(noise.Samples, m), noise.S, repeat(noise.Bank, m), noise.K)
		if err != nil {
			return nil, err
		}
		copy(p.SampleProbs[start*noise.S*hw:], sp)
		copy(p.RaterProbs[start*e.raters*hw:], rp)
		start += m
	}
	return p, nil
}

func repeat(v []float32, n int) []float32 {
	out := make([]float32, 0, len(v)*n)
	for i := 0; i < n; i++ {
		out = append(out, v...)
	}
	return out
}

// ConsensusAndUncertainty summarises S sample probability maps of P pixels ([S*P], sample-major):
// the soft consensus is the mean probability, and the uncertainty is the per-pixel population
// standard deviation of the S probabilities (0 where all samples agree, at most 0.5).
func ConsensusAndUncertainty(sampleProbs []float32, s, pixels int) (consensus, uncertainty []float32) {
	consensus = make([]float32, pixels)
	uncertainty = make([]float32, pixels)
	sum := make([]float64, pixels)
	sq := make([]float64, pixels)
	for j := 0; j < s; j++ {
		m := sampleProbs[j*pixels : (j+1)*pixels]
		for i, x := range m {
			f := float64(x)
			sum[i] += f
			sq[i] += f * f
		}
	}
	inv := 1 / float64(s)
	for i := range consensus {
		mean := sum[i] * inv
		consensus[i] = float32(mean)
		uncertainty[i] = float32(math.Sqrt(max(0, sq[i]*inv-mean*mean)))
	}
	return consensus, uncertainty
}
