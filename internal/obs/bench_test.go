package obs

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// The redacting handler's cost is measured against the plain JSON handler it wraps (the baseline),
// on a typical gateway log line.
// Both write the same line: the plain logger gets the correlation id as an explicit attribute,
// the project's logger takes it from the context.
func BenchmarkLogPlainJSON(b *testing.B) {
	l := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.InfoContext(ctx, "instance stored", "sop_instance", "1.2.826.0.1.3680043.8.498.1", "study", "1.2.826.0.1.3680043.8.498.2",
			"calling_ae", "STORESCU", "bytes", 525576, CorrelationKey, "0123456789abcdef")
	}
}

func BenchmarkLogRedactingJSON(b *testing.B) {
	l := NewLogger(io.Discard, slog.LevelInfo)
	ctx := WithCorrelation(context.Background(), "0123456789abcdef")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.InfoContext(ctx, "instance stored", "sop_instance", "1.2.826.0.1.3680043.8.498.1", "study", "1.2.826.0.1.3680043.8.498.2",
			"calling_ae", "STORESCU", "bytes", 525576)
	}
}

func BenchmarkCounterIncParallel(b *testing.B) {
	c := NewRegistry().NewCounterVec("bench_total", "x", "reason")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.With("disk_low").Inc()
		}
	})
}

func BenchmarkHistogramObserve(b *testing.B) {
	h := NewRegistry().NewHistogram("bench_seconds", "x", StudyStageBuckets)
	for i := 0; i < b.N; i++ {
		h.Observe(float64(i%1000) / 10)
	}
}

func BenchmarkWriteTextDefault(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if err := Default.WriteText(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCounterBaselineParallel is the floor for BenchmarkCounterIncParallel: the same atomic
// add on one pre-resolved counter, without the label lookup.
func BenchmarkCounterBaselineParallel(b *testing.B) {
	c := NewRegistry().NewCounter("bench_total", "x")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Inc()
		}
	})
}
