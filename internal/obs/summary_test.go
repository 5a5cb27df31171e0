package obs

import "testing"

// TestSummarize reads the metrics back as typed values: counters by label (zeros left out where
// the summary says so), histogram count and sum, gauge functions read now.
func TestSummarize(t *testing.T) {
	SetBuildInfo("v-summary-test")
	before := Summarize()
	AssociationsTotal.With(OutcomeAccepted).Add(2)
	AssociationsTotal.With(OutcomeRejected).Inc()
	RejectionsTotal.With(RejectHostNotAllowed).Inc()
	RejectionsTotal.With("zero_reason").Add(0)
	ExportsTotal.With("pacs-a").Add(3)
	ExportsTotal.With("pacs-b").Add(1)
	ExportFailures.With("pacs-b").Add(2)
	InferenceSeconds.Observe(2)
	QueueDepth.Set(func() float64 { return 4 }, "summary_test")
	defer QueueDepth.Remove("summary_test")

	s := Summarize()
	if s.Version != "v-summary-test" {
		t.Errorf("version %q", s.Version)
	}
	if s.AssociationsAccepted-before.AssociationsAccepted != 2 || s.AssociationsRejected-before.AssociationsRejected != 1 {
		t.Errorf("associations accepted %v rejected %v (before %v %v)", s.AssociationsAccepted, s.AssociationsRejected, before.AssociationsAccepted, before.AssociationsRejected)
	}
	if s.ExportsDelivered-before.ExportsDelivered != 4 {
		t.Errorf("exports delivered %v, before %v", s.ExportsDelivered, before.ExportsDelivered)
	}
	if s.InferenceRuns-before.InferenceRuns != 1 || s.InferenceSeconds-before.InferenceSeconds != 2 {
		t.Errorf("inference %d runs %v s", s.InferenceRuns, s.InferenceSeconds)
	}
	find := func(lvs []LabelValue, label string) (float64, bool) {
		for _, lv := range lvs {
			if lv.Label == label {
				return lv.Value, true
			}
		}
		return 0, false
	}
	if v, ok := find(s.Rejections, RejectHostNotAllowed); !ok || v < 1 {
		t.Errorf("rejections %v", s.Rejections)
	}
	if _, ok := find(s.Rejections, "zero_reason"); ok {
		t.Errorf("a zero rejection count is listed: %v", s.Rejections)
	}
	if v, ok := find(s.ExportFailures, "pacs-b"); !ok || v < 2 {
		t.Errorf("export failures %v", s.ExportFailures)
	}
	if v, ok := find(s.Queues, "summary_test"); !ok || v != 4 {
		t.Errorf("queues %v", s.Queues)
	}
}
