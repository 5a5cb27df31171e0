package dispatch

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"dpersona/internal/dicomstd"
	"dpersona/pipeline"
)

// Outputs a route can ask for: one object each (pipeline.AllOutputs lists them all and
// pipeline.CheckOutputs is the one check).
const (
	OutputRaters      = string(pipeline.OutputRaters)      // BINARY SEG, a segment per rater style
	OutputSamples     = string(pipeline.OutputSamples)     // BINARY SEG, a segment per plausible outline
	OutputConsensus   = string(pipeline.OutputConsensus)   // BINARY SEG, mean probability above the threshold
	OutputBands       = string(pipeline.OutputBands)       // BINARY SEG, probability bands
	OutputProbability = string(pipeline.OutputProbability) // FRACTIONAL SEG (opt-in: few viewers show it)
	OutputRTStruct    = string(pipeline.OutputRTStruct)    // RT Structure Set for planning systems
)

// Destination kinds.
const (
	KindDICOM = "dicom" // C-STORE SCU
	KindSTOW  = "stow"  // DICOMweb STOW-RS
)

// Routing is the "routes" and "destinations" part of the serve config file:
//
//	{
//	  "destinations": [
//	    {"name": "pacs", "kind": "dicom", "ae_title": "PACS", "host": "10.0.0.5", "port": 104},
//	    {"name": "web",  "kind": "stow",  "url": "http://pacs:8042/dicom-web"}
//	  ],
//	  "routes": [
//	    {"name": "lung-ct", "called_ae": "DPERSONA", "modality": "CT", "min_instances": 2,
//	     "model": "models/default", "outputs": ["raters", "samples"], "destinations": ["pacs", "web"]}
//	  ]
//	}
//
// Every series of a study is matched against the routes in order; each matching route runs its
// model on that series and sends the outputs it names to its destinations.
type Routing struct {
	Routes       []Route       `json:"routes"`
	Destinations []Destination `json:"destinations"`
}

// Route selects series and says what to do with them. Empty selectors match anything.
type Route struct {
	Name         string `json:"name"`
	CalledAE     string `json:"called_ae,omitempty"`  // the gateway AE title the study was sent to
	CallingAE    string `json:"calling_ae,omitempty"` // the AE title that sent it
	Modality     string `json:"modality,omitempty"`   // e.g. CT
	SOPClassUID  string `json:"sop_class_uid,omitempty"`
	MinInstances int    `json:"min_instances,omitempty"` // series rule: at least this many images (a multi-frame instance counts its frames)
	MaxInstances int    `json:"max_instances,omitempty"` // series rule: at most this many (0 = no limit)
	Model        string `json:"model"`                   // model bundle directory
	// Outputs are some of raters, samples, consensus, bands, probability, rtstruct. Left out,
	// a route gets its mode's default (see OutputNames): an explicitly empty list is an error.
	Outputs      []string `json:"outputs"`
	Destinations []string `json:"destinations"` // destination names; none = keep results in the bus only
	// Lesions, when set, runs lesion mode: the model runs only on lesions marked in the study
	// (see lesions.go).
	Lesions *LesionRouting `json:"lesions,omitempty"`
	// Encoding tunes the objects of this route (zero value: the defaults).
	Encoding RouteEncoding `json:"encoding,omitempty"`
}

// OutputNames is what the route produces: its outputs, or, when it names none, the pipeline's
// default for its mode: pipeline.DefaultOutputs (raters, samples, consensus: every viewer shows
// them) for a whole-series route, pipeline.LesionDefaultOutputs (those and the rtstruct, since
// planning systems are among the first users of a lesion's outline) for a lesion route.
func (rt Route) OutputNames() []string {
	if rt.Outputs != nil {
		return rt.Outputs
	}
	def := pipeline.DefaultOutputs
	if rt.Lesions != nil {
		def = pipeline.LesionDefaultOutputs
	}
	out := make([]string, len(def))
	for i, o := range def {
		out[i] = string(o)
	}
	return out
}

// RouteEncoding tunes a route's objects (pipeline.Encoding).
type RouteEncoding struct {
	// Bands are the lower bounds of the bands output's segments (default 0.25, 0.5, 0.75).
	Bands []float64 `json:"bands,omitempty"`
	// CompactSamples writes the samples only on slices where they disagree (elsewhere they
	// equal the consensus).
	CompactSamples bool `json:"compact_samples,omitempty"`
	// RTStructSamples adds the samples as ROIs to the rtstruct output.
	RTStructSamples bool `json:"rtstruct_samples,omitempty"`
	// RTInterpretedType is the RTROIInterpretedType of the rtstruct ROIs (default GTV).
	RTInterpretedType string `json:"rt_interpreted_type,omitempty"`
	// Deflate sends the objects in the Deflated Explicit VR Little Endian transfer syntax
	// (C-STORE proposes it and inflates for a peer that does not accept it).
	Deflate bool `json:"deflate,omitempty"`
}

// pipelineEncoding is the pipeline's form of the route's encoding options.
func (e RouteEncoding) pipelineEncoding() pipeline.Encoding {
	return pipeline.Encoding{Bands: e.Bands, CompactSamples: e.CompactSamples, RTStructSamples: e.RTStructSamples,
		RTInterpretedType: e.RTInterpretedType, Deflate: e.Deflate}
}

// Destination is a downstream PACS or archive.
type Destination struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // dicom or stow
	// C-STORE
	AETitle   string `json:"ae_title,omitempty"`   // called AE of the destination
	Host      string `json:"host,omitempty"`       // host name or address
	Port      int    `json:"port,omitempty"`       // DICOM port
	CallingAE string `json:"calling_ae,omitempty"` // our AE title towards it (default: the gateway's)
	// STOW-RS
	URL         string `json:"url,omitempty"`          // DICOMweb root; /studies is appended
	BearerToken string `json:"bearer_token,omitempty"` // sent as Authorization: Bearer
	// Timeout bounds one attempt to deliver a job (association or HTTP request), default 2m.
	Timeout Duration `json:"timeout,omitempty"`
	// RejectionNotes sends this destination the IHE IOCM rejection note (Key Object Selection
	// "Rejected for Quality Reasons") that comes with a new version of the results, so an
	// archive that implements IOCM hides the replaced objects.
	RejectionNotes bool `json:"rejection_notes,omitempty"`
}

// Duration reads "30s"-style strings (and plain seconds) from JSON.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration %s: want a string like \"30s\" or seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadRouting reads the routes and destinations from a JSON config file (other keys are left to
// the rest of the serve configuration).
func LoadRouting(path string) (Routing, error) {
	var r Routing
	b, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("routing config: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("routing config %s: %w", path, err)
	}
	base := filepath.Dir(path)
	for i := range r.Routes {
		if m := r.Routes[i].Model; m != "" && !filepath.IsAbs(m) {
			// A relative model path in a config file means relative to that file, if it is there.
			if _, err := os.Stat(filepath.Join(base, m)); err == nil {
				r.Routes[i].Model = filepath.Join(base, m)
			}
		}
	}
	return r, r.Validate()
}

// Validate checks names, references and addresses, naming the offending entry.
func (r Routing) Validate() error {
	dests := map[string]bool{}
	tokens := map[string]string{}
	for i, d := range r.Destinations {
		where := fmt.Sprintf("destination %d (%q)", i+1, d.Name)
		if d.Name == "" {
			return fmt.Errorf("%s: name is empty", where)
		}
		if dests[d.Name] {
			return fmt.Errorf("%s: name used twice", where)
		}
		dests[d.Name] = true
		if other, ok := tokens[escapeToken(d.Name)]; ok {
			return fmt.Errorf("%s: name clashes with destination %q", where, other)
		}
		tokens[escapeToken(d.Name)] = d.Name
		switch d.Kind {
		case KindDICOM:
			if err := dicomstd.CheckAETitle(d.AETitle); err != nil {
				return fmt.Errorf("%s: ae_title: %w", where, err)
			}
			if d.CallingAE != "" {
				if err := dicomstd.CheckAETitle(d.CallingAE); err != nil {
					return fmt.Errorf("%s: calling_ae: %w", where, err)
				}
			}
			if d.Host == "" || d.Port <= 0 || d.Port > 65535 {
				return fmt.Errorf("%s: needs host and a port in 1..65535 (got %q, %d)", where, d.Host, d.Port)
			}
		case KindSTOW:
			u, err := url.Parse(d.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("%s: url %q is not an http(s) DICOMweb root", where, d.URL)
			}
		default:
			return fmt.Errorf("%s: kind %q is neither %q nor %q", where, d.Kind, KindDICOM, KindSTOW)
		}
	}
	names := map[string]bool{}
	for i, rt := range r.Routes {
		where := fmt.Sprintf("route %d (%q)", i+1, rt.Name)
		if rt.Name == "" {
			return fmt.Errorf("%s: name is empty", where)
		}
		if names[rt.Name] {
			return fmt.Errorf("%s: name used twice", where)
		}
		names[rt.Name] = true
		if rt.Model == "" {
			return fmt.Errorf("%s: model is empty", where)
		}
		if rt.Outputs != nil && len(rt.Outputs) == 0 {
			return fmt.Errorf("%s: outputs is an empty list (leave the key out for the default, or name some of raters, samples, consensus, bands, probability, rtstruct)", where)
		}
		for _, o := range rt.OutputNames() {
			if err := pipeline.CheckOutputs([]pipeline.Output{pipeline.Output(o)}); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
		if err := rt.Encoding.pipelineEncoding().Check(); err != nil {
			return fmt.Errorf("%s: encoding: %w", where, err)
		}
		for _, d := range rt.Destinations {
			if !dests[d] {
				return fmt.Errorf("%s: destination %q is not defined", where, d)
			}
		}
		if rt.MaxInstances > 0 && rt.MaxInstances < rt.MinInstances {
			return fmt.Errorf("%s: max_instances %d < min_instances %d", where, rt.MaxInstances, rt.MinInstances)
		}
		if err := rt.Lesions.validate(rt.Name); err != nil {
			return err
		}
	}
	return nil
}

// Destination returns the destination with that name.
func (r Routing) Destination(name string) (Destination, bool) {
	for _, d := range r.Destinations {
		if d.Name == name {
			return d, true
		}
	}
	return Destination{}, false
}

// Match returns the routes that apply to one series of a study, in config order.
func (r Routing) Match(ev StudyComplete, se SeriesRef) []Route {
	var out []Route
	for _, rt := range r.Routes {
		if rt.mismatch(ev, se) == "" {
			out = append(out, rt)
		}
	}
	return out
}

// Explain says, for a series no route matches, what each route missed (for the study's reason).
func (r Routing) Explain(ev StudyComplete, se SeriesRef) string {
	if len(r.Routes) == 0 {
		return "no routes configured"
	}
	var why []string
	for _, rt := range r.Routes {
		if m := rt.mismatch(ev, se); m != "" {
			why = append(why, fmt.Sprintf("route %s: %s", rt.Name, m))
		}
	}
	return strings.Join(why, "; ")
}

// explainStudy is Explain for every series of a study, each named by its number in the study
// (UIDs would make the reason unreadable).
func (r Routing) explainStudy(ev StudyComplete) string {
	var parts []string
	for i, se := range ev.Series {
		parts = append(parts, fmt.Sprintf("series %d (%s): %s", i+1, se.Modality, r.Explain(ev, se)))
	}
	return strings.Join(parts, " | ")
}

// mismatch is the first criterion of rt that the series fails, "" when it matches.
func (rt Route) mismatch(ev StudyComplete, se SeriesRef) string {
	if rt.CalledAE != "" && !strings.EqualFold(strings.TrimSpace(rt.CalledAE), strings.TrimSpace(ev.CalledAE)) {
		return fmt.Sprintf("called AE %s, not %s", ev.CalledAE, rt.CalledAE)
	}
	if rt.CallingAE != "" && !strings.EqualFold(strings.TrimSpace(rt.CallingAE), strings.TrimSpace(ev.CallingAE)) {
		return fmt.Sprintf("calling AE %s, not %s", ev.CallingAE, rt.CallingAE)
	}
	if rt.Modality != "" && !strings.EqualFold(rt.Modality, se.Modality) {
		return fmt.Sprintf("modality %s, not %s", se.Modality, rt.Modality)
	}
	if rt.SOPClassUID != "" {
		same := len(se.Instances) > 0
		for _, in := range se.Instances {
			if in.SOPClassUID != rt.SOPClassUID {
				same = false
				break
			}
		}
		if !same {
			return fmt.Sprintf("not all instances are of SOP class %s", rt.SOPClassUID)
		}
	}
	// Images, not instances: a multi-frame instance counts each of its frames.
	images := se.Images()
	if images < rt.MinInstances {
		return fmt.Sprintf("needs at least %d images, the series has %d image(s) in %d instance(s)", rt.MinInstances, images, len(se.Instances))
	}
	if rt.MaxInstances > 0 && images > rt.MaxInstances {
		return fmt.Sprintf("takes at most %d images, the series has %d", rt.MaxInstances, images)
	}
	return ""
}

// ParseForwardTo turns --forward-to AET@HOST:PORT into a C-STORE destination named "forward".
func ParseForwardTo(s string) (Destination, error) {
	a, err := dicomstd.ParseAddress(s)
	if err != nil {
		return Destination{}, fmt.Errorf("--forward-to %q: %w", s, err)
	}
	return Destination{Name: "forward", Kind: KindDICOM, AETitle: a.AETitle, Host: a.Host, Port: a.Port}, nil
}

// DefaultRouting is what serve runs without a routes section: every CT series goes through the
// default model and its three BINARY SEG objects (raters, samples, consensus: every viewer shows
// them) go to the given destinations (e.g. the one from --forward-to).
func DefaultRouting(model string, dests ...Destination) Routing {
	r := Routing{Destinations: dests}
	rt := Route{Name: "default", Modality: "CT", MinInstances: 1, Model: model}
	rt.Outputs = rt.OutputNames()
	for _, d := range dests {
		rt.Destinations = append(rt.Destinations, d.Name)
	}
	r.Routes = []Route{rt}
	return r
}

// RoutingSources is what a serve process knows about routing: the "routes" and "destinations"
// keys of its config file and the destinations given on the command line.
type RoutingSources struct {
	// Routes and Destinations come from the config file; RoutesConfigured says the file has a
	// "routes" key (an empty list there is an error, not "use the default").
	Routes           []Route
	RoutesConfigured bool
	Destinations     []Destination
	// ForwardTo are AET@HOST:PORT C-STORE destinations (--forward-to), StowTo DICOMweb roots
	// (--stow-to); they are named forward, forward2, ... and stow, stow2, ...
	ForwardTo, StowTo []string
	// DefaultModel is the bundle directory of routes that name none.
	DefaultModel string
}

// MergeRouting is the one rule for combining the sources: without configured routes every CT
// series goes through the default model to every destination; with configured routes, a route
// without a model gets the default one, and the command-line destinations are added to every
// route. The result is validated.
func MergeRouting(s RoutingSources) (Routing, error) {
	r := Routing{Routes: append([]Route(nil), s.Routes...), Destinations: append([]Destination(nil), s.Destinations...)}
	var extra []Destination
	for i, f := range s.ForwardTo {
		d, err := ParseForwardTo(f)
		if err != nil {
			return r, err
		}
		if i > 0 {
			d.Name = fmt.Sprintf("forward%d", i+1)
		}
		extra = append(extra, d)
	}
	for i, u := range s.StowTo {
		name := "stow"
		if i > 0 {
			name = fmt.Sprintf("stow%d", i+1)
		}
		extra = append(extra, Destination{Name: name, Kind: KindSTOW, URL: u})
	}
	r.Destinations = append(r.Destinations, extra...)
	if !s.RoutesConfigured {
		r.Routes = DefaultRouting(s.DefaultModel, r.Destinations...).Routes
	} else {
		for i := range r.Routes {
			if r.Routes[i].Model == "" {
				r.Routes[i].Model = s.DefaultModel
			}
			r.Routes[i].Destinations = append([]string(nil), r.Routes[i].Destinations...)
			for _, d := range extra {
				r.Routes[i].Destinations = append(r.Routes[i].Destinations, d.Name)
			}
		}
	}
	return r, r.Validate()
}

// Models lists the model bundle directories the routes name, each once, sorted.
func (r Routing) Models() []string {
	seen := map[string]bool{}
	var out []string
	for _, rt := range r.Routes {
		if !seen[rt.Model] {
			seen[rt.Model] = true
			out = append(out, rt.Model)
		}
	}
	sort.Strings(out)
	return out
}
