package obs

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func scrape(t *testing.T, r *Registry) (*Exposition, string) {
	t.Helper()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != TextContentType {
		t.Fatalf("Content-Type %q, want %q", ct, TextContentType)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := ParseText(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, body)
	}
	return exp, string(body)
}

func TestCountersGaugesRoundTrip(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounter("test_events_total", "Events seen.")
	cv := r.NewCounterVec("test_rejections_total", "Rejections by reason.", "reason")
	g := r.NewGauge("test_open", "Open things.")
	gv := r.NewGaugeVec("test_temp", "Temperature by room.", "room")
	depth := 0.0
	fv := r.NewGaugeFuncVec("test_queue_depth", "Queue depth.", "queue")
	fv.Set(func() float64 { return depth }, "a")

	c.Inc()
	c.Add(2.5)
	cv.With("disk_low").Inc()
	cv.With("disk_low").Inc()
	cv.With("host_not_allowed").Add(7)
	g.Inc()
	g.Inc()
	g.Dec()
	g.Add(-3)
	gv.With("lab").Set(21.5)
	depth = 42

	exp, body := scrape(t, r)
	want := []struct {
		name   string
		labels map[string]string
		v      float64
	}{
		{"test_events_total", nil, 3.5},
		{"test_rejections_total", map[string]string{"reason": "disk_low"}, 2},
		{"test_rejections_total", map[string]string{"reason": "host_not_allowed"}, 7},
		{"test_open", nil, -2},
		{"test_temp", map[string]string{"room": "lab"}, 21.5},
		{"test_queue_depth", map[string]string{"queue": "a"}, 42},
	}
	for _, w := range want {
		labels := w.labels
		if labels == nil {
			labels = map[string]string{}
		}
		got, ok := exp.Value(w.name, labels)
		if !ok || got != w.v {
			t.Errorf("%s%v = %v (present %v), want %v\n%s", w.name, w.labels, got, ok, w.v, body)
		}
	}
	types := map[string]string{"test_events_total": "counter", "test_open": "gauge", "test_queue_depth": "gauge"}
	for name, typ := range types {
		if f := exp.Families[name]; f == nil || f.Type != typ || f.Help == "" {
			t.Errorf("family %s: %+v, want TYPE %s with HELP", name, f, typ)
		}
	}
	// Families are sorted by name, so the output is stable between scrapes.
	if i, j := strings.Index(body, "# HELP test_events_total"), strings.Index(body, "# HELP test_temp"); i < 0 || j < 0 || i > j {
		t.Errorf("families not sorted by name:\n%s", body)
	}
	fv.Remove("a")
	exp, _ = scrape(t, r)
	if _, ok := exp.Value("test_queue_depth", map[string]string{"queue": "a"}); ok {
		t.Error("removed gauge func is still exported")
	}
}

func TestHistogramCumulativeBuckets(t *testing.T) {
	r := NewRegistry()
	h := r.NewHistogramVec("test_latency_seconds", "Latency.", []float64{0.1, 1, 10}, "stage")
	obsv := []float64{0.05, 0.1, 0.5, 2, 2, 50}
	for _, v := range obsv {
		h.With("infer").Observe(v)
	}
	h.With("export").ObserveDuration(1500 * time.Millisecond)

	exp, body := scrape(t, r)
	if exp.Families["test_latency_seconds"].Type != "histogram" {
		t.Fatalf("TYPE is not histogram:\n%s", body)
	}
	// A bucket counts every observation <= its bound (0.1 itself falls in le="0.1").
	buckets := map[string]float64{"0.1": 2, "1": 3, "10": 5, "+Inf": 6}
	for le, want := range buckets {
		got, ok := exp.Value("test_latency_seconds_bucket", map[string]string{"stage": "infer", "le": le})
		if !ok || got != want {
			t.Errorf("bucket le=%s: %v (present %v), want %v\n%s", le, got, ok, want, body)
		}
	}
	sum := 0.0
	for _, v := range obsv {
		sum += v
	}
	if got, _ := exp.Value("test_latency_seconds_sum", map[string]string{"stage": "infer"}); math.Abs(got-sum) > 1e-9 {
		t.Errorf("sum %v, want %v", got, sum)
	}
	if got, _ := exp.Value("test_latency_seconds_count", map[string]string{"stage": "infer"}); got != 6 {
		t.Errorf("count %v, want 6", got)
	}
	if got, _ := exp.Value("test_latency_seconds_bucket", map[string]string{"stage": "export", "le": "1"}); got != 0 {
		t.Errorf("export le=1: %v, want 0", got)
	}
	if got, _ := exp.Value("test_latency_seconds_bucket", map[string]string{"stage": "export", "le": "10"}); got != 1 {
		t.Errorf("export le=10: %v, want 1", got)
	}
	// Buckets appear in increasing order of le, +Inf last, then _sum and _count.
	inf := strings.Index(body, `test_latency_seconds_bucket{stage="infer",le="+Inf"}`)
	le10 := strings.Index(body, `test_latency_seconds_bucket{stage="infer",le="10"}`)
	cnt := strings.Index(body, `test_latency_seconds_count{stage="infer"}`)
	if !(le10 < inf && inf < cnt) {
		t.Errorf("histogram lines out of order:\n%s", body)
	}
}

func TestLabelAndHelpEscaping(t *testing.T) {
	r := NewRegistry()
	nasty := "PACS \"main\"\\ward\nB"
	r.NewCounterVec("test_escape_total", "Help with a \\ backslash\nand a newline.", "destination").With(nasty).Inc()
	exp, body := scrape(t, r)
	if !strings.Contains(body, `destination="PACS \"main\"\\ward\nB"`) {
		t.Errorf("label value not escaped as the format requires:\n%s", body)
	}
	if !strings.Contains(body, `# HELP test_escape_total Help with a \\ backslash\nand a newline.`) {
		t.Errorf("HELP not escaped:\n%s", body)
	}
	if got, ok := exp.Value("test_escape_total", map[string]string{"destination": nasty}); !ok || got != 1 {
		t.Errorf("escaped label does not round-trip: %v %v\n%s", got, ok, body)
	}
	if h := exp.Families["test_escape_total"].Help; h != "Help with a \\ backslash\nand a newline." {
		t.Errorf("HELP round-trip: %q", h)
	}
}

func TestConcurrentUpdatesAreNotLost(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("test_concurrent_total", "x", "k")
	h := r.NewHistogram("test_concurrent_seconds", "x", []float64{1})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				c.With("a").Inc()
				h.Observe(0.5)
			}
		}()
	}
	wg.Wait()
	if v := c.With("a").Value(); v != 8000 {
		t.Errorf("counter %v, want 8000", v)
	}
	if n, s := h.Snapshot(); n != 8000 || s != 4000 {
		t.Errorf("histogram count %d sum %v, want 8000 and 4000", n, s)
	}
}

func TestRegistrationErrorsPanic(t *testing.T) {
	cases := map[string]func(r *Registry){
		"bad metric name":     func(r *Registry) { r.NewCounter("9bad", "x") },
		"bad label name":      func(r *Registry) { r.NewCounterVec("ok_total", "x", "bad-label") },
		"reserved label":      func(r *Registry) { r.NewCounterVec("ok_total", "x", "__name") },
		"le on histogram":     func(r *Registry) { r.NewHistogramVec("h", "x", []float64{1}, "le") },
		"unsorted buckets":    func(r *Registry) { r.NewHistogram("h", "x", []float64{2, 1}) },
		"no buckets":          func(r *Registry) { r.NewHistogram("h", "x", nil) },
		"duplicate":           func(r *Registry) { r.NewGauge("dup", "x"); r.NewCounter("dup", "y") },
		"wrong label count":   func(r *Registry) { r.NewCounterVec("c_total", "x", "a", "b").With("only-one") },
		"decreasing counter":  func(r *Registry) { r.NewCounter("c_total", "x").Add(-1) },
		"duplicate label":     func(r *Registry) { r.NewGaugeVec("g", "x", "a", "a") },
		"func gauge arity":    func(r *Registry) { r.NewGaugeFuncVec("g", "x", "q").Set(func() float64 { return 0 }) },
		"histogram arity vec": func(r *Registry) { r.NewHistogramVec("h", "x", []float64{1}, "s").With() },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f(NewRegistry())
		})
	}
}

func TestParseTextRejectsMalformedInput(t *testing.T) {
	bad := map[string]string{
		"sample without TYPE":   "foo 1\n",
		"unquoted label":        "# TYPE foo counter\nfoo{a=b} 1\n",
		"unterminated label":    "# TYPE foo counter\nfoo{a=\"b} 1\n",
		"bad value":             "# TYPE foo counter\nfoo one\n",
		"bad escape":            "# TYPE foo counter\nfoo{a=\"\\t\"} 1\n",
		"unknown type":          "# TYPE foo meter\nfoo 1\n",
		"TYPE after samples":    "# TYPE foo counter\nfoo 1\n# TYPE foo gauge\n",
		"garbage after labels":  "# TYPE foo counter\nfoo{a=\"b\"x} 1\n",
		"bucket of a non-histo": "# TYPE foo counter\nfoo_bucket{le=\"1\"} 1\n",
		"bad timestamp":         "# TYPE foo counter\nfoo 1 soon\n",
	}
	for name, text := range bad {
		if _, err := ParseText(strings.NewReader(text)); err == nil {
			t.Errorf("%s: parsed without error: %q", name, text)
		}
	}
	good := "# a comment\n# HELP foo x\n# TYPE foo counter\nfoo{a=\"1\",b=\"2\"} 3 1700000000000\nfoo{a=\"2\",b=\"2\"} +Inf\n"
	exp, err := ParseText(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := exp.Sum("foo", map[string]string{"b": "2"}); !math.IsInf(got, +1) {
		t.Errorf("Sum = %v", got)
	}
	if bl := exp.ByLabel("foo", "a"); len(bl) != 2 || bl[0].Label != "1" || bl[0].Value != 3 {
		t.Errorf("ByLabel = %v", bl)
	}
}

func TestDefaultRegistryExposesProjectMetrics(t *testing.T) {
	SetBuildInfo("test-version")
	before := InstancesReceived.Value()
	InstancesReceived.Inc()
	RejectionsTotal.With(RejectCallingAENotAllowed).Inc()
	StudyStageSeconds.With(StageReceive).Observe(3)
	QueueDepth.Set(func() float64 { return 5 }, "study_complete")
	defer QueueDepth.Remove("study_complete")

	exp, body := scrape(t, Default)
	for _, name := range []string{
		"dpersona_associations_active", "dpersona_associations_total", "dpersona_instances_received_total",
		"dpersona_bytes_received_total", "dpersona_rejections_total", "dpersona_study_stage_seconds",
		"dpersona_inference_seconds", "dpersona_queue_depth", "dpersona_export_failures_total",
		"dpersona_build_info", "go_goroutines",
	} {
		if exp.Families[name] == nil || exp.Families[name].Type == "" {
			t.Errorf("project metric %s is not exposed", name)
		}
	}
	if got, _ := exp.Value("dpersona_instances_received_total", map[string]string{}); got != before+1 {
		t.Errorf("instances received %v, want %v", got, before+1)
	}
	if got, _ := exp.Value("dpersona_queue_depth", map[string]string{"queue": "study_complete"}); got != 5 {
		t.Errorf("queue depth %v, want 5\n%s", got, body)
	}
	if got := exp.Sum("dpersona_study_stage_seconds_count", map[string]string{"stage": StageReceive}); got < 1 {
		t.Errorf("receive stage count %v", got)
	}
	if got := exp.Sum("dpersona_build_info", map[string]string{"version": "test-version"}); got != 1 {
		t.Errorf("build info %v\n%s", got, body)
	}
}

func TestHandlerMethods(t *testing.T) {
	r := NewRegistry()
	r.NewCounter("x_total", "x").Inc()
	for method, want := range map[string]int{"GET": 200, "HEAD": 200, "POST": 405} {
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, httptest.NewRequest(method, "/metrics", nil))
		if rec.Code != want {
			t.Errorf("%s /metrics: %d, want %d", method, rec.Code, want)
		}
		if method == "HEAD" && rec.Body.Len() != 0 {
			t.Errorf("HEAD returned a body")
		}
	}
}
