package inference

import "context"

// WarmUp runs one full batch of blank tiles through every session before the first study: the
// first runs of an onnxruntime session are much slower (allocation, kernel selection), and a
// study should not pay for that (on the shared 2-core dev machine the first 7-slice study of a
// fresh gateway took 17.6 s of model time, the next three 10.2 to 11.7 s).
func (e *Engine) WarmUp(ctx context.Context) error {
	m := e.Bundle().Manifest
	n := e.BatchSize()
	tiles := make([]float32, n*m.Input.Channels*m.Input.Height*m.Input.Width)
	noise := StudyNoise("warm-up", 0, m.Defaults.Samples, m.Defaults.BankSize, m.LatentSize)
	errs := make(chan error, e.Sessions())
	for i := 0; i < e.Sessions(); i++ {
		go func() {
			_, err := e.Predict(ctx, tiles, n, noise)
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
