package dispatch

import (
	"context"
	"testing"

	"dpersona/pipeline"
)

// TestPipelineProcessorFailuresArePermanent: a pipeline failure fails the study at once (the same
// input fails the same way), while a cancelled run is left to the retry policy.
func TestPipelineProcessorFailuresArePermanent(t *testing.T) {
	p := PipelineProcessor{Models: &pipeline.Models{}}
	job := Job{StudyInstanceUID: "1.2.3", Model: "models/missing", Outputs: []string{OutputRaters}}
	_, err := p.Process(context.Background(), job)
	if err == nil || !IsPermanent(err) {
		t.Fatalf("pipeline failure: %v (permanent %v)", err, IsPermanent(err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Process(ctx, job); err == nil || IsPermanent(err) {
		t.Fatalf("cancelled run: %v (permanent %v)", err, IsPermanent(err))
	}
	if _, err := p.ModelVersion("models/missing"); err == nil {
		t.Fatal("version of a model that is not loaded")
	}
}
