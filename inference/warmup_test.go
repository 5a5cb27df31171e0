package inference

import (
	"context"
	"testing"
)

// TestWarmUpRunsEverySession: the warm-up succeeds on a real bundle with several sessions, and a
// cancelled context fails it instead of hanging start-up.
func TestWarmUpRunsEverySession(t *testing.T) {
	e := newTinyEngine(t, EngineOptions{Sessions: 2, IntraOpThreads: 1, BatchSize: 2})
	if err := e.WarmUp(context.Background()); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.WarmUp(ctx); err == nil {
		t.Fatal("warm-up with a cancelled context succeeded")
	}
}
