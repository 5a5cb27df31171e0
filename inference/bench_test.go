package inference

import (
	"context"
	"testing"
)

// BenchmarkPredictTiny times both stages on 8 tiles of the committed tiny bundle (S=10, K=100);
// the PyTorch comparison on real model sizes is scripts/bench-inference.sh.
func BenchmarkPredictTiny(b *testing.B) {
	e := newTinyEngine(b, EngineOptions{IntraOpThreads: 2})
	img := make([]float32, 8*128*128)
	for i := range img {
		img[i] = float32(i%251) / 250
	}
	noise := StudyNoise("bench", 1, 10, 100, 6)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.Predict(context.Background(), img, 8, noise); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(8*b.N), "ms/slice")
}

// BenchmarkMetricsPerImage scores one 128x128 image with 4 raters, 10 samples and 4 heads.
func BenchmarkMetricsPerImage(b *testing.B) {
	const hw = 128 * 128
	img := ImageOutputs{}
	for r := 0; r < 4; r++ {
		m := make([]uint8, hw)
		for i := range m {
			if (i/128-60)*(i/128-60)+(i%128-60)*(i%128-60) < 100+r*40 {
				m[i] = 1
			}
		}
		img.Raters = append(img.Raters, m)
		p := make([]float32, hw)
		for i := range p {
			p[i] = float32(m[i])*0.7 + float32(i%7)*0.03
		}
		img.RaterProbs = append(img.RaterProbs, p)
	}
	for s := 0; s < 10; s++ {
		img.SampleProbs = append(img.SampleProbs, img.RaterProbs[s%4])
	}
	acc := NewMetricAccumulator(4, 0.5)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := acc.Add(img); err != nil {
			b.Fatal(err)
		}
	}
}
