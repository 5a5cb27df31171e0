package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"dpersona/internal/httpapi"
	"dpersona/internal/obs"
	"dpersona/internal/testutil"
)

// startGatewayHTTP answers /api/studies in the shape of the serve contract (issue 2) and the real
// /api/status, behind the bearer guard, next to the real obs handlers; natsErr is what the
// "nats" readiness check returns.
func startGatewayHTTP(t *testing.T, token string, studies []map[string]any, natsErr *error) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	obs.Mount(mux,
		obs.Check{Name: "nats", Func: func(context.Context) error { return *natsErr }},
		obs.DiskCheck(t.TempDir(), 1))
	api := http.NewServeMux()
	api.Handle("GET /api/status", httpapi.StatusHandler())
	api.HandleFunc("GET /api/studies", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(studies)
	})
	mux.Handle("/api/", obs.RequireBearer(token, api))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func study(uid, state string, n int) map[string]any {
	return map[string]any{
		"study_instance_uid": uid, "called_ae": "DPERSONA", "state": state, "instances": n,
		"series": []map[string]any{{"series_instance_uid": uid + ".1", "modality": "CT", "instances": n}},
	}
}

func TestStatusSummarisesARunningGateway(t *testing.T) {
	var natsErr error
	srv := startGatewayHTTP(t, "tok-123", []map[string]any{
		study("1.2.4", "failed", 2), study("1.2.5", "zzz-new-state", 1), study("1.2.6", "done", 3),
		study("1.2.1", "receiving", 4), study("1.2.2", "complete", 10), study("1.2.3", "complete", 6),
	}, &natsErr)

	// Drive the real project metrics; the expected numbers are read back from them, since other
	// tests of this package may have counted before.
	obs.SetBuildInfo("v-status-test")
	obs.AssociationsActive.Inc()
	defer obs.AssociationsActive.Dec()
	obs.AssociationsTotal.With(obs.OutcomeAccepted).Add(3)
	obs.InstancesReceived.Add(20)
	obs.BytesReceived.Add(3 * 1024 * 1024)
	obs.RejectionsTotal.With(obs.RejectDiskLow).Inc()
	obs.ExportFailures.With("PACS@10.0.0.9:104").Add(2)
	obs.InferenceSeconds.Observe(1.5)
	obs.QueueDepth.Set(func() float64 { return 7 }, "studies")
	defer obs.QueueDepth.Remove("studies")

	var out bytes.Buffer
	err := runStatus(context.Background(), &out, statusOptions{addr: srv.URL, token: "tok-123", timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("status of a ready gateway: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Logf("summary:\n%s", text)
	wants := []string{
		"(version v-status-test)",
		"readiness   ready",
		"ok   nats",
		// Pipeline order, then unknown states.
		"studies     6 (26 instances): receiving 1, complete 2, done 1, failed 1, zzz-new-state 1",
		fmt.Sprintf("associations %s active, %s accepted", num(obs.AssociationsActive.Value()), num(obs.AssociationsTotal.With(obs.OutcomeAccepted).Value())),
		fmt.Sprintf("received    %s instances", num(obs.InstancesReceived.Value())),
		fmt.Sprintf("disk_low %s", num(obs.RejectionsTotal.With(obs.RejectDiskLow).Value())),
		fmt.Sprintf("PACS@10.0.0.9:104 %s", num(obs.ExportFailures.With("PACS@10.0.0.9:104").Value())),
		"queues      studies 7",
	}
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("summary lacks %q:\n%s", w, text)
		}
	}

	// Liveness only: nothing printed, success even when a readiness check fails later.
	out.Reset()
	if err := runStatus(context.Background(), &out, statusOptions{addr: srv.URL, live: true, timeout: 5 * time.Second}); err != nil || out.Len() != 0 {
		t.Errorf("--live on a live gateway: %v, output %q", err, out.String())
	}

	// Wrong token: the API part says so, readiness and metrics still show.
	out.Reset()
	if err := runStatus(context.Background(), &out, statusOptions{addr: srv.URL, token: "nope", timeout: 5 * time.Second}); err != nil {
		t.Fatalf("wrong token but ready gateway: %v", err)
	}
	if !strings.Contains(out.String(), "refused the API token") || !strings.Contains(out.String(), "readiness   ready") {
		t.Errorf("wrong token not explained:\n%s", out.String())
	}

	// A failing check: the summary names it and the command fails.
	natsErr = errors.New("nats: no servers available for connection")
	out.Reset()
	err = runStatus(context.Background(), &out, statusOptions{addr: srv.URL, token: "tok-123", timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Errorf("not-ready gateway must fail the command, got %v", err)
	}
	if err := runStatus(context.Background(), io.Discard, statusOptions{addr: srv.URL, live: true, timeout: 5 * time.Second}); err != nil {
		t.Errorf("--live must not depend on readiness: %v", err)
	}
	if !strings.Contains(out.String(), "FAIL nats") || !strings.Contains(out.String(), "no servers available") {
		t.Errorf("failing check not shown:\n%s", out.String())
	}
}

func TestStatusUnreachableGateway(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) // nothing listens there
	var out bytes.Buffer
	err := runStatus(context.Background(), &out, statusOptions{addr: addr, timeout: 2 * time.Second})
	if err == nil {
		t.Fatal("status of a gateway that is not running succeeded")
	}
	if lerr := runStatus(context.Background(), io.Discard, statusOptions{addr: addr, live: true, timeout: 2 * time.Second}); lerr == nil || !strings.Contains(lerr.Error(), "not reachable") {
		t.Errorf("--live on a dead gateway: %v", lerr)
	}
	for _, w := range []string{"not reachable", addr, "connection refused"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

func TestBaseURL(t *testing.T) {
	good := map[string]string{
		"127.0.0.1:8080":           "http://127.0.0.1:8080",
		":9000":                    "http://127.0.0.1:9000",
		"https://gw.example:8443/": "https://gw.example:8443",
	}
	for in, want := range good {
		if got, err := baseURL(in); err != nil || got != want {
			t.Errorf("baseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://x:1", "http://"} {
		if _, err := baseURL(bad); err == nil {
			t.Errorf("baseURL(%q) accepted", bad)
		}
	}
}

// TestShellCompletion checks cobra's completion scripts and the dynamic completion they call, in
// process and through a freshly built binary.
func TestShellCompletion(t *testing.T) {
	run := func(args ...string) string {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("dpersona %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	if bash := run("completion", "bash"); !strings.Contains(bash, "__start_dpersona") || !strings.Contains(bash, "complete -o default -F __start_dpersona dpersona") {
		t.Errorf("bash completion script lacks its entry point:\n%.400s", bash)
	}
	if zsh := run("completion", "zsh"); !strings.HasPrefix(zsh, "#compdef dpersona") {
		t.Errorf("zsh completion script lacks #compdef:\n%.200s", zsh)
	}
	// The scripts call `dpersona __complete ...`: the status flags must come back from it.
	dyn := run("__complete", "status", "--")
	for _, flag := range []string{"--http", "--token", "--timeout"} {
		if !strings.Contains(dyn, flag) {
			t.Errorf("dynamic completion of `status --` lacks %s:\n%s", flag, dyn)
		}
	}
	if sub := run("__complete", "sta"); !strings.Contains(sub, "status") {
		t.Errorf("dynamic completion of `sta` lacks status:\n%s", sub)
	}

	if testing.Short() {
		t.Skip("-short: not building the binary")
	}
	bin := testutil.BuildDpersona(t)
	out, err := exec.Command(bin, "completion", "bash").Output()
	if err != nil || !strings.Contains(string(out), "__start_dpersona") {
		t.Errorf("%s completion bash: %v\n%.300s", bin, err, out)
	}
	// bash itself must accept the script.
	if bashPath, err := exec.LookPath("bash"); err == nil {
		check := exec.Command(bashPath, "-n")
		check.Stdin = bytes.NewReader(out)
		if b, err := check.CombinedOutput(); err != nil {
			t.Errorf("bash -n rejects the completion script: %v\n%s", err, b)
		}
	}
}
