package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultShutdownTimeout is the one shutdown deadline when none is configured. It must stay below
// the deployment's grace periods (deploy/: systemd TimeoutStopSec=60s, Kubernetes
// terminationGracePeriodSeconds 60 and 120), with room for the process to exit.
const DefaultShutdownTimeout = 45 * time.Second

// Group runs the long-running parts of a process and stops them together. Create it with
// NewGroup, add parts with Serve and OnStop, then call Run.
type Group struct {
	log      *slog.Logger
	deadline time.Duration

	mu       sync.Mutex
	parts    []part
	failure  chan error // the first part that stopped on its own
	stopping atomic.Bool
}

type part struct {
	name string
	stop func(ctx context.Context) error
}

// NewGroup returns a group whose parts all stop within shutdownTimeout (0: the default).
func NewGroup(log *slog.Logger, shutdownTimeout time.Duration) *Group {
	if log == nil {
		log = slog.Default()
	}
	if shutdownTimeout <= 0 {
		shutdownTimeout = DefaultShutdownTimeout
	}
	return &Group{log: log, deadline: shutdownTimeout, failure: make(chan error, 1)}
}

// ShutdownTimeout is the group's one shutdown deadline.
func (g *Group) ShutdownTimeout() time.Duration { return g.deadline }

// Serve runs serve (a listener's accept loop, a worker) on its own goroutine and registers stop
// for shutdown. serve is expected to return only after stop was called: if it returns before,
// whatever it returns (nil included), the part has failed and the whole group stops, and Run
// returns an error naming it.
func (g *Group) Serve(name string, serve func() error, stop func(ctx context.Context) error) {
	g.OnStop(name, stop)
	go func() {
		err := serve()
		if g.stopping.Load() {
			return
		}
		if err == nil {
			err = errors.New("stopped without an error")
		}
		select {
		case g.failure <- fmt.Errorf("%s: %w", name, err):
		default:
		}
	}()
}

// OnStop registers a stop step without a goroutine of its own (closing the bus, releasing
// models). Parts stop in the reverse order of registration: register what others depend on first.
func (g *Group) OnStop(name string, stop func(ctx context.Context) error) {
	g.mu.Lock()
	g.parts = append(g.parts, part{name: name, stop: stop})
	g.mu.Unlock()
}

// Ready is a readiness check: it fails once the group is stopping.
func (g *Group) Ready(context.Context) error {
	if g.stopping.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// Fail stops the group from outside a part (e.g. a check that found the process broken beyond
// repair).
func (g *Group) Fail(err error) {
	select {
	case g.failure <- err:
	default:
	}
}

// Run waits until ctx ends (a signal: a clean stop, Run returns nil) or a part fails (Run returns
// its error, so the process exits non-zero and its supervisor restarts it). Either way it then
// stops every part, in reverse order, all within the one shutdown deadline: a part still
// stopping when the deadline passes is abandoned and named in the returned error.
func (g *Group) Run(ctx context.Context) error {
	var cause error
	select {
	case <-ctx.Done():
		g.log.Info("shutting down", "deadline", g.deadline.String())
	case cause = <-g.failure:
		g.log.Error("a part of the process stopped on its own; shutting down", "err", cause, "deadline", g.deadline.String())
	}
	g.stopping.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), g.deadline)
	defer cancel()
	g.mu.Lock()
	parts := append([]part(nil), g.parts...)
	g.mu.Unlock()
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- p.stop(sctx) }()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				g.log.Warn("stop", "part", p.name, "err", err)
			}
			g.log.Debug("stopped", "part", p.name, "took", time.Since(start).String())
		case <-sctx.Done():
			var left []string
			for j := i; j >= 0; j-- {
				left = append(left, parts[j].name)
			}
			err := fmt.Errorf("shutdown deadline of %v passed; not stopped cleanly: %v", g.deadline, left)
			g.log.Error("shutdown deadline passed", "parts_left", left)
			return errors.Join(cause, err)
		}
	}
	return cause
}
