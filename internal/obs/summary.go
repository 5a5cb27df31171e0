package obs

import (
	"sort"
	"strings"
)

// Summary is what the project's metrics say, as operators read it: GET /api/status serves it as
// JSON and `dpersona status` prints it, so the status command reads typed values instead of
// parsing the Prometheus text of /metrics.
type Summary struct {
	Version              string  `json:"version,omitempty"`
	AssociationsActive   float64 `json:"associations_active"`
	AssociationsAccepted float64 `json:"associations_accepted"`
	AssociationsRejected float64 `json:"associations_rejected"`
	InstancesReceived    float64 `json:"instances_received"`
	BytesReceived        float64 `json:"bytes_received"`
	// Rejections counts refused associations, connections and instances by reason (non-zero only).
	Rejections        []LabelValue `json:"rejections"`
	InferenceRuns     uint64       `json:"inference_runs"`
	InferenceSeconds  float64      `json:"inference_seconds"` // summed over the runs
	InferenceFailures float64      `json:"inference_failures"`
	ExportsDelivered  float64      `json:"exports_delivered"`
	// ExportFailures counts failed delivery attempts by destination (non-zero only).
	ExportFailures []LabelValue `json:"export_failures"`
	// Queues are the work-queue depths read from the bus now (-1: the bus did not answer).
	Queues []LabelValue `json:"queues"`
}

// Summarize reads the project's metrics from the Default registry.
func Summarize() Summary {
	s := Summary{
		AssociationsActive: AssociationsActive.Value(),
		InstancesReceived:  InstancesReceived.Value(),
		BytesReceived:      BytesReceived.Value(),
		InferenceFailures:  InferenceFailures.Value(),
		Rejections:         nonZero(RejectionsTotal.Values()),
		ExportFailures:     nonZero(ExportFailures.Values()),
		Queues:             QueueDepth.Values(),
	}
	if v, ok := buildVersion.Load().(string); ok {
		s.Version = v
	}
	for _, lv := range AssociationsTotal.Values() {
		switch lv.Label {
		case OutcomeAccepted:
			s.AssociationsAccepted = lv.Value
		case OutcomeRejected:
			s.AssociationsRejected = lv.Value
		}
	}
	for _, lv := range ExportsTotal.Values() {
		s.ExportsDelivered += lv.Value
	}
	s.InferenceRuns, s.InferenceSeconds = InferenceSeconds.Snapshot()
	return s
}

// Values returns the value of every series of the family, labelled by its label values (joined
// with "," when there are several labels), sorted by label. It creates no series.
func (v *CounterVec) Values() []LabelValue {
	var out []LabelValue
	if m := v.f.children.Load(); m != nil {
		v.f.mu.Lock()
		for k, c := range *m {
			out = append(out, LabelValue{Label: strings.Join(v.f.values[k], ","), Value: c.(*Counter).Value()})
		}
		v.f.mu.Unlock()
	}
	sortLabelValues(out)
	return out
}

// Values reads every function of the family now, labelled as CounterVec.Values does.
func (v *GaugeFuncVec) Values() []LabelValue {
	type entry struct {
		label string
		fn    func() float64
	}
	v.f.mu.Lock()
	entries := make([]entry, 0, len(v.f.funcs))
	for k, fn := range v.f.funcs {
		entries = append(entries, entry{strings.Join(v.f.values[k], ","), fn})
	}
	v.f.mu.Unlock()
	out := make([]LabelValue, 0, len(entries))
	for _, e := range entries { // outside the lock: a function may take a while (it asks the bus)
		out = append(out, LabelValue{Label: e.label, Value: e.fn()})
	}
	sortLabelValues(out)
	return out
}

func sortLabelValues(s []LabelValue) {
	sort.Slice(s, func(i, j int) bool { return s[i].Label < s[j].Label })
}

func nonZero(in []LabelValue) []LabelValue {
	out := []LabelValue{}
	for _, lv := range in {
		if lv.Value != 0 {
			out = append(out, lv)
		}
	}
	return out
}
