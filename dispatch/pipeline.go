package dispatch

import (
	"context"
	"errors"

	"dpersona/pipeline"
)

// PipelineProcessor runs the inference jobs on the pipeline's loaded models: routes name bundle
// directories, which the registry maps to its engines.
type PipelineProcessor struct {
	Models *pipeline.Models
}

// ModelVersion is "name version" of the route's bundle.
func (p PipelineProcessor) ModelVersion(model string) (string, error) {
	return p.Models.ModelVersion(model)
}

// Process runs the pipeline on the job's series. A pipeline failure (unreadable input, geometry
// the model cannot take, an encoding error) fails the same way on the same input, so it is
// Permanent; a cancelled or timed-out run is retried.
func (p PipelineProcessor) Process(ctx context.Context, job Job) ([]SEG, error) {
	outs := make([]pipeline.Output, 0, len(job.Outputs))
	for _, o := range job.Outputs {
		outs = append(outs, pipeline.Output(o))
	}
	enc := job.Encoding.pipelineEncoding()
	enc.Version = job.Version
	if len(job.Predecessors) > 0 {
		enc.Predecessors = map[pipeline.Output]pipeline.Predecessor{}
		for o, p := range job.Predecessors {
			enc.Predecessors[pipeline.Output(o)] = pipeline.Predecessor{SOPInstanceUID: p.SOPInstanceUID, SOPClassUID: p.SOPClassUID, SeriesInstanceUID: p.SeriesInstanceUID}
		}
	}
	res, err := p.Models.Process(ctx, job.Model, pipeline.Request{SeriesFiles: job.Files, StudyInstanceUID: job.StudyInstanceUID, Outputs: outs, Encoding: enc})
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		var f *pipeline.Failure
		if errors.As(err, &f) {
			return nil, Permanent(err)
		}
		return nil, err
	}
	return segsOf(res), nil
}
