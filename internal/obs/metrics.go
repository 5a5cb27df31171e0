package obs

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TextContentType is the Content-Type of the Prometheus text exposition format 0.0.4.
const TextContentType = "text/plain; version=0.0.4; charset=utf-8"

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

type metricKind string

const (
	kindCounter   metricKind = "counter"
	kindGauge     metricKind = "gauge"
	kindHistogram metricKind = "histogram"
)

// Registry holds metric families and writes them in the Prometheus text format. The zero value is
// not usable; use NewRegistry. Registration panics on a programming error (invalid or duplicate
// name), because a metric that silently fails to register is worse than a crash at start-up.
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{families: map[string]*family{}} }

// family is one metric name with its HELP, TYPE, label names and children (one per label-value
// combination).
type family struct {
	name       string
	help       string
	kind       metricKind
	labelNames []string
	buckets    []float64 // histograms only

	// children maps the label values joined by \xff to the series. With of an existing series is
	// the hot path, so the map is copy-on-write behind an atomic pointer: lookups take no lock and
	// allocate nothing; creating a series (rare) copies it under mu, which also guards the maps
	// below.
	children atomic.Pointer[map[string]child]
	mu       sync.Mutex
	funcs    map[string]func() float64
	values   map[string][]string // key -> label values
}

type child interface {
	write(w *bufio.Writer, f *family, labelValues []string)
}

func (r *Registry) register(name, help string, kind metricKind, labelNames []string, buckets []float64) *family {
	if !metricNameRE.MatchString(name) {
		panic(fmt.Sprintf("obs: invalid metric name %q", name))
	}
	seen := map[string]bool{}
	for _, l := range labelNames {
		if !labelNameRE.MatchString(l) || strings.HasPrefix(l, "__") {
			panic(fmt.Sprintf("obs: metric %s: invalid label name %q", name, l))
		}
		if kind == kindHistogram && l == "le" {
			panic(fmt.Sprintf("obs: metric %s: label name \"le\" is reserved for histogram buckets", name))
		}
		if seen[l] {
			panic(fmt.Sprintf("obs: metric %s: duplicate label name %q", name, l))
		}
		seen[l] = true
	}
	f := &family{
		name: name, help: help, kind: kind,
		labelNames: append([]string(nil), labelNames...),
		buckets:    buckets,
		funcs:      map[string]func() float64{},
		values:     map[string][]string{},
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.families[name]; dup {
		panic(fmt.Sprintf("obs: metric %s registered twice", name))
	}
	r.families[name] = f
	return f
}

func (f *family) key(labelValues []string) string {
	if len(labelValues) != len(f.labelNames) {
		// Join, not the slice itself, so that labelValues does not escape: the variadic slice of
		// every With call then stays on the stack.
		panic(fmt.Sprintf("obs: metric %s wants %d label values %v, got %d: %s",
			f.name, len(f.labelNames), f.labelNames, len(labelValues), strings.Join(labelValues, ", ")))
	}
	return strings.Join(labelValues, "\xff")
}

// get returns the child for labelValues, creating it with mk on first use.
func (f *family) get(labelValues []string, mk func() child) child {
	k := f.key(labelValues)
	if m := f.children.Load(); m != nil {
		if c, ok := (*m)[k]; ok {
			return c
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.children.Load()
	if old != nil {
		if c, ok := (*old)[k]; ok {
			return c
		}
	}
	next := make(map[string]child, 1)
	if old != nil {
		for ok, oc := range *old {
			next[ok] = oc
		}
	}
	c := mk()
	next[k] = c
	f.values[k] = append([]string(nil), labelValues...)
	f.children.Store(&next)
	return c
}

// atomicFloat is a float64 updated with compare-and-swap, so counters and gauges take no lock.
type atomicFloat struct{ bits atomic.Uint64 }

func (a *atomicFloat) add(v float64) {
	for {
		old := a.bits.Load()
		if a.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}
func (a *atomicFloat) set(v float64) { a.bits.Store(math.Float64bits(v)) }
func (a *atomicFloat) load() float64 { return math.Float64frombits(a.bits.Load()) }

// Counter is a monotonically increasing value.
type Counter struct{ v atomicFloat }

// Inc adds one.
func (c *Counter) Inc() { c.v.add(1) }

// Add adds v; a negative v panics, since a counter that goes down breaks rate().
func (c *Counter) Add(v float64) {
	if v < 0 {
		panic("obs: counter decreased")
	}
	c.v.add(v)
}

// Value is the current value (for tests and the status command).
func (c *Counter) Value() float64 { return c.v.load() }

func (c *Counter) write(w *bufio.Writer, f *family, lv []string) {
	writeSample(w, f.name, f.labelNames, lv, "", "", c.v.load())
}

// Gauge is a value that goes up and down.
type Gauge struct{ v atomicFloat }

func (g *Gauge) Set(v float64) { g.v.set(v) }
func (g *Gauge) Add(v float64) { g.v.add(v) }
func (g *Gauge) Inc()          { g.v.add(1) }
func (g *Gauge) Dec()          { g.v.add(-1) }

// Value is the current value.
func (g *Gauge) Value() float64 { return g.v.load() }

func (g *Gauge) write(w *bufio.Writer, f *family, lv []string) {
	writeSample(w, f.name, f.labelNames, lv, "", "", g.v.load())
}

// Histogram counts observations into cumulative buckets and keeps their sum and count.
type Histogram struct {
	upper []float64 // sorted upper bounds, without +Inf

	mu     sync.Mutex
	counts []uint64 // per bucket, non-cumulative; last one is the +Inf overflow
	sum    float64
	count  uint64
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.upper, v) // first bound >= v: buckets are "le"
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.count++
	h.mu.Unlock()
}

// ObserveDuration records d in seconds, the Prometheus base unit.
func (h *Histogram) ObserveDuration(d time.Duration) { h.Observe(d.Seconds()) }

// ObserveSince records the seconds elapsed since start.
func (h *Histogram) ObserveSince(start time.Time) { h.Observe(time.Since(start).Seconds()) }

// Snapshot returns the count and sum of observations (for tests and the status command).
func (h *Histogram) Snapshot() (count uint64, sum float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count, h.sum
}

func (h *Histogram) write(w *bufio.Writer, f *family, lv []string) {
	h.mu.Lock()
	counts := append([]uint64(nil), h.counts...)
	sum, count := h.sum, h.count
	h.mu.Unlock()
	var cum uint64
	for i, ub := range h.upper {
		cum += counts[i]
		writeSample(w, f.name+"_bucket", f.labelNames, lv, "le", formatFloat(ub), float64(cum))
	}
	writeSample(w, f.name+"_bucket", f.labelNames, lv, "le", "+Inf", float64(count))
	writeSample(w, f.name+"_sum", f.labelNames, lv, "", "", sum)
	writeSample(w, f.name+"_count", f.labelNames, lv, "", "", float64(count))
}

// CounterVec is a counter family partitioned by labels.
type CounterVec struct{ f *family }

// With returns the counter for the given label values (in the order of the label names).
func (v *CounterVec) With(labelValues ...string) *Counter {
	return v.f.get(labelValues, func() child { return &Counter{} }).(*Counter)
}

// GaugeVec is a gauge family partitioned by labels.
type GaugeVec struct{ f *family }

// With returns the gauge for the given label values.
func (v *GaugeVec) With(labelValues ...string) *Gauge {
	return v.f.get(labelValues, func() child { return &Gauge{} }).(*Gauge)
}

// HistogramVec is a histogram family partitioned by labels.
type HistogramVec struct{ f *family }

// With returns the histogram for the given label values.
func (v *HistogramVec) With(labelValues ...string) *Histogram {
	return v.f.get(labelValues, func() child { return newHistogram(v.f.buckets) }).(*Histogram)
}

// GaugeFuncVec is a gauge family whose values are read from functions at scrape time, e.g. queue
// depths owned by another component.
type GaugeFuncVec struct{ f *family }

// Set installs (or replaces) the function read for the given label values. The function runs on
// every scrape, so it must be cheap and must not block for long.
func (v *GaugeFuncVec) Set(fn func() float64, labelValues ...string) {
	k := v.f.key(labelValues)
	v.f.mu.Lock()
	v.f.funcs[k] = fn
	v.f.values[k] = append([]string(nil), labelValues...)
	v.f.mu.Unlock()
}

// Remove stops exporting the series with the given label values.
func (v *GaugeFuncVec) Remove(labelValues ...string) {
	k := v.f.key(labelValues)
	v.f.mu.Lock()
	delete(v.f.funcs, k)
	delete(v.f.values, k)
	v.f.mu.Unlock()
}

func newHistogram(buckets []float64) *Histogram {
	return &Histogram{upper: buckets, counts: make([]uint64, len(buckets)+1)}
}

func checkBuckets(name string, buckets []float64) []float64 {
	if len(buckets) == 0 {
		panic(fmt.Sprintf("obs: histogram %s needs at least one bucket", name))
	}
	b := append([]float64(nil), buckets...)
	if math.IsInf(b[len(b)-1], +1) {
		b = b[:len(b)-1] // +Inf is always implicit
	}
	for i := range b {
		if math.IsNaN(b[i]) || (i > 0 && b[i] <= b[i-1]) {
			panic(fmt.Sprintf("obs: histogram %s: buckets must be strictly increasing, got %v", name, buckets))
		}
	}
	return b
}

// NewCounter registers an unlabelled counter.
func (r *Registry) NewCounter(name, help string) *Counter {
	return r.NewCounterVec(name, help).With()
}

// NewCounterVec registers a counter family with the given label names.
func (r *Registry) NewCounterVec(name, help string, labelNames ...string) *CounterVec {
	return &CounterVec{r.register(name, help, kindCounter, labelNames, nil)}
}

// NewGauge registers an unlabelled gauge.
func (r *Registry) NewGauge(name, help string) *Gauge { return r.NewGaugeVec(name, help).With() }

// NewGaugeVec registers a gauge family with the given label names.
func (r *Registry) NewGaugeVec(name, help string, labelNames ...string) *GaugeVec {
	return &GaugeVec{r.register(name, help, kindGauge, labelNames, nil)}
}

// NewGaugeFunc registers an unlabelled gauge read from fn at scrape time.
func (r *Registry) NewGaugeFunc(name, help string, fn func() float64) {
	r.NewGaugeFuncVec(name, help).Set(fn)
}

// NewGaugeFuncVec registers a gauge family whose series are functions installed later with Set.
func (r *Registry) NewGaugeFuncVec(name, help string, labelNames ...string) *GaugeFuncVec {
	return &GaugeFuncVec{r.register(name, help, kindGauge, labelNames, nil)}
}

// NewHistogram registers an unlabelled histogram with the given bucket upper bounds.
func (r *Registry) NewHistogram(name, help string, buckets []float64) *Histogram {
	return r.NewHistogramVec(name, help, buckets).With()
}

// NewHistogramVec registers a histogram family with the given bucket upper bounds and labels.
func (r *Registry) NewHistogramVec(name, help string, buckets []float64, labelNames ...string) *HistogramVec {
	b := checkBuckets(name, buckets)
	return &HistogramVec{r.register(name, help, kindHistogram, labelNames, b)}
}

// WriteText writes every family in the Prometheus text exposition format 0.0.4, families sorted
// by name and series sorted by label values so that the output is stable.
func (r *Registry) WriteText(out io.Writer) error {
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })

	w := bufio.NewWriter(out)
	for _, f := range fams {
		f.writeTo(w)
	}
	return w.Flush()
}

func (f *family) writeTo(w *bufio.Writer) {
	type series struct {
		key string
		lv  []string
		c   child
		fn  func() float64
	}
	f.mu.Lock()
	all := make([]series, 0, len(f.values))
	for k, lv := range f.values {
		var c child
		if m := f.children.Load(); m != nil {
			c = (*m)[k]
		}
		all = append(all, series{key: k, lv: lv, c: c, fn: f.funcs[k]})
	}
	f.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].key < all[j].key })

	fmt.Fprintf(w, "# HELP %s %s\n", f.name, escapeHelp(f.help))
	fmt.Fprintf(w, "# TYPE %s %s\n", f.name, f.kind)
	for _, s := range all {
		switch {
		case s.c != nil:
			s.c.write(w, f, s.lv)
		case s.fn != nil:
			writeSample(w, f.name, f.labelNames, s.lv, "", "", s.fn())
		}
	}
}

func writeSample(w *bufio.Writer, name string, labelNames, labelValues []string, extraName, extraValue string, v float64) {
	w.WriteString(name)
	if len(labelNames) > 0 || extraName != "" {
		w.WriteByte('{')
		for i, ln := range labelNames {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(ln)
			w.WriteString(`="`)
			w.WriteString(escapeLabelValue(labelValues[i]))
			w.WriteByte('"')
		}
		if extraName != "" {
			if len(labelNames) > 0 {
				w.WriteByte(',')
			}
			w.WriteString(extraName)
			w.WriteString(`="`)
			w.WriteString(extraValue)
			w.WriteByte('"')
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string       { return helpEscaper.Replace(s) }
func escapeLabelValue(s string) string { return labelEscaper.Replace(s) }

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, +1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Handler serves the registry in the text format (GET and HEAD only).
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", TextContentType)
		w.Header().Set("Cache-Control", "no-store")
		if req.Method == http.MethodHead {
			return
		}
		_ = r.WriteText(w) // a write error means the scraper went away; nothing to do
	})
}
