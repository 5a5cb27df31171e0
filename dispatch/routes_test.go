package dispatch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadRoutingFromConfigFile(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "models", "lung"), 0o755)
	os.WriteFile(filepath.Join(dir, "models", "lung", "manifest.json"), []byte("{}"), 0o644)
	cfg := `{
	  "data_dir": "ignored by routing",
	  "destinations": [
	    {"name": "pacs", "kind": "dicom", "ae_title": "PACS", "host": "10.0.0.5", "port": 104, "timeout": "30s"},
	    {"name": "web", "kind": "stow", "url": "https://pacs.example/dicom-web", "timeout": 90}
	  ],
	  "routes": [
	    {"name": "lung-ct", "called_ae": "DPERSONA", "modality": "CT", "min_instances": 3,
	     "model": "models/lung", "outputs": ["raters", "samples"], "destinations": ["pacs", "web"]},
	    {"name": "research", "calling_ae": "RESEARCH", "model": "/abs/model", "outputs": ["probability"]}
	  ]
	}`
	path := filepath.Join(dir, "dpersona.json")
	os.WriteFile(path, []byte(cfg), 0o644)
	r, err := LoadRouting(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Routes[0].Model; got != filepath.Join(dir, "models", "lung") {
		t.Fatalf("relative model path resolved to %q, want next to the config file", got)
	}
	if d, _ := r.Destination("pacs"); time.Duration(d.Timeout) != 30*time.Second {
		t.Fatalf("pacs timeout = %v", time.Duration(d.Timeout))
	}
	if d, _ := r.Destination("web"); time.Duration(d.Timeout) != 90*time.Second {
		t.Fatalf("web timeout = %v", time.Duration(d.Timeout))
	}

	ct := func(n int) SeriesRef {
		se := SeriesRef{SeriesInstanceUID: "1.2", Modality: "CT"}
		for i := 0; i < n; i++ {
			se.Instances = append(se.Instances, InstanceRef{SOPInstanceUID: "1", SOPClassUID: ctImage})
		}
		return se
	}
	names := func(rs []Route) string {
		var s []string
		for _, r := range rs {
			s = append(s, r.Name)
		}
		return strings.Join(s, ",")
	}
	ev := StudyComplete{CalledAE: "DPERSONA", CallingAE: "CT01"}
	if got := names(r.Match(ev, ct(5))); got != "lung-ct" {
		t.Fatalf("5-slice CT to DPERSONA matched %q", got)
	}
	if got := names(r.Match(ev, ct(2))); got != "" {
		t.Fatalf("2-slice CT (min_instances 3) matched %q", got)
	}
	mr := ct(5)
	mr.Modality = "MR"
	if got := names(r.Match(ev, mr)); got != "" {
		t.Fatalf("MR matched %q", got)
	}
	ev.CallingAE, ev.CalledAE = "research", "OTHER"
	if got := names(r.Match(ev, mr)); got != "research" {
		t.Fatalf("study from RESEARCH (case-insensitive) matched %q", got)
	}
}

func TestRoutingValidationNamesTheProblem(t *testing.T) {
	pacs := Destination{Name: "pacs", Kind: KindDICOM, AETitle: "PACS", Host: "h", Port: 104}
	route := Route{Name: "r", Model: "m", Outputs: []string{OutputRaters}, Destinations: []string{"pacs"}}
	cases := []struct {
		mutate func(*Routing)
		want   string
	}{
		{func(r *Routing) { r.Routes[0].Destinations = []string{"nowhere"} }, `destination "nowhere" is not defined`},
		{func(r *Routing) { r.Routes[0].Outputs = []string{"mask"} }, `unknown output "mask"`},
		{func(r *Routing) { r.Routes[0].Outputs = []string{} }, "outputs is an empty list (leave the key out for the default"},
		{func(r *Routing) { r.Routes[0].Outputs = nil }, ""},
		{func(r *Routing) { r.Routes[0].Model = "" }, "model is empty"},
		{func(r *Routing) { r.Routes[0].Encoding.Bands = []float64{0.5, 1} }, "probability band 1 must be in (0, 1)"},
		{func(r *Routing) { r.Routes[0].Encoding.RTInterpretedType = "TUMOUR" }, `RT ROI interpreted type "TUMOUR"`},
		{func(r *Routing) { r.Destinations[0].AETitle = "A_TITLE_THAT_IS_TOO_LONG" }, "longer than 16"},
		{func(r *Routing) { r.Destinations[0].Port = 0 }, "port in 1..65535"},
		{func(r *Routing) { r.Destinations[0].Kind = "ftp" }, `kind "ftp"`},
		{func(r *Routing) { r.Destinations = append(r.Destinations, pacs) }, "used twice"},
		{func(r *Routing) {
			r.Destinations = append(r.Destinations, Destination{Name: "w", Kind: KindSTOW, URL: "ftp://x"})
		}, "not an http(s) DICOMweb root"},
		{func(r *Routing) {
			r.Destinations = append(r.Destinations, Destination{Name: "pacs.", Kind: KindSTOW, URL: "http://x"})
		}, ""},
	}
	for i, c := range cases {
		r := Routing{Destinations: []Destination{pacs}, Routes: []Route{route}}
		r.Routes[0].Outputs = append([]string(nil), route.Outputs...)
		r.Routes[0].Destinations = append([]string(nil), route.Destinations...)
		c.mutate(&r)
		err := r.Validate()
		if c.want == "" {
			if err != nil {
				t.Errorf("case %d: unexpected error %v", i, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: err = %v, want it to mention %q", i, err, c.want)
		}
	}
}

// TestRouteDefaultOutputs: a route that names no outputs gets its mode's default, read from the
// config file as a site writes it: a whole-series route the three BINARY SEGs every viewer shows,
// a lesion route those and the RT Structure Set (issue 13: planning systems are among the first
// users of a lesion's outline); named outputs are kept as they are.
func TestRouteDefaultOutputs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dpersona.json")
	os.WriteFile(path, []byte(`{"routes": [
	  {"name": "whole", "calling_ae": "CT01", "model": "m"},
	  {"name": "lesions", "calling_ae": "CT02", "model": "m", "lesions": {}},
	  {"name": "lesions-raters", "calling_ae": "CT03", "model": "m", "lesions": {"without_prompts": "skip"}, "outputs": ["raters"]}
	]}`), 0o644)
	r, err := LoadRouting(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"whole":          "raters,samples,consensus",
		"lesions":        "raters,samples,consensus,rtstruct",
		"lesions-raters": "raters",
	}
	for _, rt := range r.Routes {
		if got := strings.Join(rt.OutputNames(), ","); got != want[rt.Name] {
			t.Errorf("route %s: outputs %s, want %s", rt.Name, got, want[rt.Name])
		}
	}
	if got := strings.Join(DefaultRouting("m").Routes[0].Outputs, ","); got != want["whole"] {
		t.Errorf("the default routing's outputs %s, want %s", got, want["whole"])
	}
}

func TestParseForwardTo(t *testing.T) {
	d, err := ParseForwardTo("ORTHANC@127.0.0.1:4242")
	if err != nil || d.AETitle != "ORTHANC" || d.Host != "127.0.0.1" || d.Port != 4242 || d.Kind != KindDICOM {
		t.Fatalf("got %+v, %v", d, err)
	}
	if d, err := ParseForwardTo("PACS@[::1]:104"); err != nil || d.Host != "::1" || d.Port != 104 {
		t.Fatalf("IPv6: %+v, %v", d, err)
	}
	for in, want := range map[string]string{
		"127.0.0.1:4242":                 "want AET@HOST:PORT",
		"PACS@host":                      "no port",
		"PACS@host:99999":                "not in 1..65535",
		"WAY_TOO_LONG_AE_TITLE@host:104": "longer than 16",
	} {
		if _, err := ParseForwardTo(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseForwardTo(%q) = %v, want %q", in, err, want)
		}
	}
	r := DefaultRouting("models/default", d)
	if err := r.Validate(); err != nil || len(r.Routes) != 1 || len(r.Routes[0].Outputs) != 3 || r.Routes[0].Destinations[0] != "forward" {
		t.Fatalf("default routing %+v: %v", r, err)
	}
}

// TestMergeRouting: the command-line destinations join the configured ones and every route,
// routes without a model get the default one, and without routes the default route sends
// every CT series to every destination.
func TestMergeRouting(t *testing.T) {
	pacs := Destination{Name: "pacs", Kind: KindDICOM, AETitle: "PACS", Host: "10.0.0.5", Port: 104}

	r, err := MergeRouting(RoutingSources{DefaultModel: "models/default", Destinations: []Destination{pacs},
		ForwardTo: []string{"A@h1:104", "B@h2:11112"}, StowTo: []string{"http://web/dicom-web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Routes) != 1 || r.Routes[0].Name != "default" || r.Routes[0].Modality != "CT" || r.Routes[0].Model != "models/default" {
		t.Fatalf("default route = %+v", r.Routes)
	}
	if got := strings.Join(r.Routes[0].Destinations, ","); got != "pacs,forward,forward2,stow" {
		t.Fatalf("default route destinations = %s", got)
	}
	if d, ok := r.Destination("forward2"); !ok || d.AETitle != "B" || d.Port != 11112 {
		t.Fatalf("forward2 = %+v", d)
	}
	if got := r.Models(); len(got) != 1 || got[0] != "models/default" {
		t.Fatalf("models = %v", got)
	}

	configured := []Route{
		{Name: "lung", Modality: "CT", Outputs: []string{OutputRaters}, Destinations: []string{"pacs"}},
		{Name: "research", Model: "/abs/model", Outputs: []string{OutputProbability}},
	}
	r, err = MergeRouting(RoutingSources{DefaultModel: "models/default", Routes: configured, RoutesConfigured: true,
		Destinations: []Destination{pacs}, StowTo: []string{"http://web/dicom-web"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Routes[0].Model != "models/default" || r.Routes[1].Model != "/abs/model" {
		t.Fatalf("models = %q, %q", r.Routes[0].Model, r.Routes[1].Model)
	}
	if a, b := strings.Join(r.Routes[0].Destinations, ","), strings.Join(r.Routes[1].Destinations, ","); a != "pacs,stow" || b != "stow" {
		t.Fatalf("route destinations = %s / %s", a, b)
	}
	if len(configured[0].Destinations) != 1 {
		t.Fatal("MergeRouting changed its input")
	}
	if got := strings.Join(r.Models(), ","); got != "/abs/model,models/default" {
		t.Fatalf("models = %s", got)
	}

	if _, err := MergeRouting(RoutingSources{DefaultModel: "m", ForwardTo: []string{"no-port@host"}}); err == nil {
		t.Error("a malformed --forward-to was accepted")
	}
	if _, err := MergeRouting(RoutingSources{DefaultModel: "m", RoutesConfigured: true,
		Routes: []Route{{Name: "x", Outputs: []string{OutputRaters}, Destinations: []string{"nowhere"}}}}); err == nil {
		t.Error("a route to an unknown destination was accepted")
	}
}

// TestStudyStateShownOverTheGateway: receiving wins, received adds nothing to complete, later bus
// states win.
func TestStudyStateShownOverTheGateway(t *testing.T) {
	for _, c := range []struct{ gateway, bus, want string }{
		{"receiving", StateDone, "receiving"},
		{"receiving", StateReceived, "receiving"},
		{"complete", StateReceived, "complete"},
		{"complete", StateInferring, StateInferring},
		{"complete", StateFailed, StateFailed},
	} {
		st := StudyState{State: c.bus}
		if got := st.ShownOver(c.gateway); got != c.want {
			t.Errorf("gateway %s, bus %s: shown %s, want %s", c.gateway, c.bus, got, c.want)
		}
	}
}

// min_instances counts images: a single multi-frame instance (an enhanced CT) with enough frames
// matches, and when nothing matches, Explain says which criterion each route missed.
func TestMinInstancesCountsFrames(t *testing.T) {
	r := Routing{Routes: []Route{{Name: "lung-ct", Modality: "CT", MinInstances: 2, Model: "default", Outputs: []string{OutputRaters}}}}
	ev := StudyComplete{CalledAE: "DPERSONA"}
	enhanced := SeriesRef{SeriesInstanceUID: "1.2.3", Modality: "CT", Instances: []InstanceRef{{SOPInstanceUID: "1.2.3.1", SOPClassUID: "1.2.840.10008.5.1.4.1.1.2.1", Frames: 120}}}
	if got := r.Match(ev, enhanced); len(got) != 1 {
		t.Fatalf("one enhanced CT instance with 120 frames: %d routes match, want 1", len(got))
	}
	single := SeriesRef{SeriesInstanceUID: "1.2.4", Modality: "CT", Instances: []InstanceRef{{SOPInstanceUID: "1.2.4.1", SOPClassUID: "1.2.840.10008.5.1.4.1.1.2"}}}
	if got := r.Match(ev, single); len(got) != 0 {
		t.Fatalf("one single-frame CT matched a route that needs 2 images")
	}
	why := r.Explain(ev, single)
	if !strings.Contains(why, "lung-ct") || !strings.Contains(why, "at least 2") || !strings.Contains(why, "1 image") {
		t.Fatalf("explanation %q does not say which route needs how many images", why)
	}
}
