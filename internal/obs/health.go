package obs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// DefaultCheckTimeout bounds a readiness check that sets no timeout of its own.
const DefaultCheckTimeout = 2 * time.Second

// Check is one named readiness condition, e.g. "nats" (the bus answers), "disk" (free space above
// the watermark), "model" (the bundle is loaded). Func must honour ctx's deadline; a check that
// ignores it is still reported as failed when the deadline passes.
type Check struct {
	Name    string
	Timeout time.Duration // 0: DefaultCheckTimeout
	Func    func(ctx context.Context) error
}

// CheckResult is one entry of the /readyz body.
type CheckResult struct {
	Name       string  `json:"name"`
	OK         bool    `json:"ok"`
	Error      string  `json:"error,omitempty"`
	DurationMS float64 `json:"duration_ms"`
}

// ReadyReport is the /readyz body.
type ReadyReport struct {
	Status string        `json:"status"` // "ready" or "not ready"
	Checks []CheckResult `json:"checks"`
}

// RunChecks runs every check concurrently, each under its own timeout, and reports them in the
// order given.
func RunChecks(ctx context.Context, checks []Check) ReadyReport {
	results := make([]CheckResult, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runCheck(ctx, c)
		}()
	}
	wg.Wait()
	rep := ReadyReport{Status: "ready", Checks: results}
	for _, r := range results {
		if !r.OK {
			rep.Status = "not ready"
		}
	}
	return rep
}

func runCheck(ctx context.Context, c Check) CheckResult {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1) // buffered: a check that overruns its deadline must not leak blocked
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		if c.Func == nil {
			done <- errors.New("check has no function")
			return
		}
		done <- c.Func(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("timed out after %v", timeout)
	}
	res := CheckResult{Name: c.Name, OK: err == nil, DurationMS: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

// HealthzHandler answers liveness: 200 {"status":"ok"} while the process can serve HTTP at all.
// It checks nothing else on purpose: a failing dependency must make the gateway not ready, not get
// it restarted.
func HealthzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// ReadyzHandler answers readiness: 200 when every check passes, 503 otherwise, with a JSON body
// listing each check (ReadyReport). With no checks it is always ready.
func ReadyzHandler(checks ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := RunChecks(r.Context(), checks)
		code := http.StatusOK
		if rep.Status != "ready" {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, rep)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// DiskSpace returns the bytes available to an unprivileged user and the total size of the file
// system holding dir.
func DiskSpace(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("disk space of %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// DiskCheck is a readiness check that fails when the file system of dir has less than minFree
// bytes available: the same watermark below which the gateway refuses new associations.
func DiskCheck(dir string, minFree uint64) Check {
	return Check{Name: "disk", Func: func(context.Context) error {
		free, _, err := DiskSpace(dir)
		if err != nil {
			return err
		}
		if free < minFree {
			return fmt.Errorf("%s: %d bytes free, below the watermark of %d", dir, free, minFree)
		}
		return nil
	}}
}

// Mount registers /healthz, /readyz (with checks) and /metrics (the Default registry) on mux.
// The API routes (/api/...) are not its business; wrap them with RequireBearer.
func Mount(mux *http.ServeMux, checks ...Check) {
	mux.Handle("GET /healthz", HealthzHandler())
	mux.Handle("GET /readyz", ReadyzHandler(checks...))
	mux.Handle("GET /metrics", Default.Handler())
}
