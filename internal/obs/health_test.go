package obs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var timeZero time.Time

func getJSON(t *testing.T, url string, into any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", url, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("%s: body is not JSON: %v", url, err)
	}
	return resp.StatusCode
}

func TestReadyzReportsEachCheck(t *testing.T) {
	natsUp := true
	checks := []Check{
		{Name: "nats", Func: func(context.Context) error {
			if !natsUp {
				return errors.New("no connection to nats://127.0.0.1:4222")
			}
			return nil
		}},
		{Name: "model", Func: func(context.Context) error { return nil }},
		{Name: "disk", Func: func(context.Context) error { return nil }},
	}
	mux := http.NewServeMux()
	Mount(mux, checks...)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var rep ReadyReport
	if code := getJSON(t, srv.URL+"/readyz", &rep); code != 200 || rep.Status != "ready" {
		t.Fatalf("all checks pass: %d %+v", code, rep)
	}
	if len(rep.Checks) != 3 || rep.Checks[0].Name != "nats" || rep.Checks[2].Name != "disk" {
		t.Errorf("checks must be reported in the order given: %+v", rep.Checks)
	}

	natsUp = false
	rep = ReadyReport{}
	if code := getJSON(t, srv.URL+"/readyz", &rep); code != http.StatusServiceUnavailable || rep.Status != "not ready" {
		t.Fatalf("failing check: %d %+v", code, rep)
	}
	if rep.Checks[0].OK || !strings.Contains(rep.Checks[0].Error, "no connection") || !rep.Checks[1].OK {
		t.Errorf("the failing check must be named with its error, the others ok: %+v", rep.Checks)
	}

	// Liveness does not depend on the checks.
	var live map[string]string
	if code := getJSON(t, srv.URL+"/healthz", &live); code != 200 || live["status"] != "ok" {
		t.Errorf("/healthz: %d %v", code, live)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "dpersona_associations_active") {
		t.Errorf("/metrics via Mount: %d", resp.StatusCode)
	}
}

func TestReadyzTimesOutSlowChecks(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	checks := []Check{
		{Name: "respects-ctx", Timeout: 50 * time.Millisecond, Func: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}},
		{Name: "ignores-ctx", Timeout: 50 * time.Millisecond, Func: func(context.Context) error {
			<-release // blocks past its deadline
			return nil
		}},
		{Name: "panics", Func: func(context.Context) error { panic("boom") }},
		{Name: "fast", Func: func(context.Context) error { return nil }},
	}
	start := time.Now()
	rep := RunChecks(context.Background(), checks)
	if el := time.Since(start); el > time.Second {
		t.Errorf("checks ran %v: they must run concurrently and stop at their timeouts", el)
	}
	if rep.Status != "not ready" {
		t.Errorf("status %q", rep.Status)
	}
	for i, want := range []bool{false, false, false, true} {
		if rep.Checks[i].OK != want {
			t.Errorf("check %s ok=%v, want %v (%s)", rep.Checks[i].Name, rep.Checks[i].OK, want, rep.Checks[i].Error)
		}
	}
	if !strings.Contains(rep.Checks[1].Error, "timed out") || !strings.Contains(rep.Checks[2].Error, "boom") {
		t.Errorf("errors must say what happened: %+v", rep.Checks)
	}
}

func TestDiskCheck(t *testing.T) {
	dir := t.TempDir()
	free, total, err := DiskSpace(dir)
	if err != nil || total == 0 || free > total {
		t.Fatalf("DiskSpace: free %d total %d err %v", free, total, err)
	}
	if err := DiskCheck(dir, 1).Func(context.Background()); err != nil {
		t.Errorf("1 byte watermark: %v", err)
	}
	err = DiskCheck(dir, total+1).Func(context.Background())
	if err == nil || !strings.Contains(err.Error(), "watermark") {
		t.Errorf("watermark above the disk size must fail and say so: %v", err)
	}
	if err := DiskCheck(dir+"/missing", 1).Func(context.Background()); err == nil {
		t.Error("missing directory must fail")
	}
}

func TestRequireBearer(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "[]") })
	srv := httptest.NewServer(RequireBearer("s3cret-token", api))
	defer srv.Close()
	cases := []struct {
		header string
		want   int
	}{
		{"", 401},
		{"Bearer wrong", 401},
		{"Bearer s3cret-tokenX", 401},
		{"Bearer s3cret-toke", 401},
		{"Basic s3cret-token", 401},
		{"Bearer ", 401},
		{"s3cret-token", 401},
		{"Bearer s3cret-token", 200},
		{"bearer s3cret-token", 200},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", srv.URL+"/api/studies", nil)
		if c.header != "" {
			req.Header.Set("Authorization", c.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("Authorization %q: %d, want %d", c.header, resp.StatusCode, c.want)
		}
		if c.want == 401 && (resp.Header.Get("WWW-Authenticate") == "" || strings.Contains(string(body), "[]")) {
			t.Errorf("Authorization %q: refusal must carry WWW-Authenticate and no API body", c.header)
		}
	}
	// No token configured: the API is open.
	open := httptest.NewServer(RequireBearer("", api))
	defer open.Close()
	resp, err := http.Get(open.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("empty token must disable the guard: %d", resp.StatusCode)
	}
}
