package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// An inference role without a model must report itself not ready, naming the model check, so
// that an orchestrator sends no work to it; ingest alone stays ready.
func TestReadyzReportsMissingModel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the gateway")
	}
	readyz := func(p *serveProc) (int, string) {
		var code int
		var body string
		testutil.WaitFor(t, 30*time.Second, "/readyz to answer", func() bool {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", p.httpPort))
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var v any
			if json.NewDecoder(resp.Body).Decode(&v) != nil {
				return false
			}
			b, _ := json.Marshal(v)
			code, body = resp.StatusCode, string(b)
			return true
		})
		return code, body
	}

	// The test binary runs from a temporary directory, where no models/default exists.
	p := startServe(t, t.TempDir(), "--roles", "ingest,infer")
	code, body := readyz(p)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"model"`) {
		t.Fatalf("ingest+infer without a model: /readyz = %d %s, want 503 naming the model check", code, body)
	}

	q := startServe(t, t.TempDir(), "--roles", "ingest")
	code, body = readyz(q)
	if code != http.StatusOK || strings.Contains(body, `"model"`) {
		t.Fatalf("ingest only: /readyz = %d %s, want 200 without a model check", code, body)
	}
}
