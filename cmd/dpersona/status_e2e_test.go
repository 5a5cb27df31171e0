package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// Distinctive patient identifiers written into the test study: none may appear in any log line.
var leakCanaries = map[string]string{
	"(0010,0010)": "Qzxwvut^Vermillion",
	"(0010,0020)": "ID-7302958164",
	"(0010,0030)": "19230417",
	"(0010,1000)": "OTH-5550123",
	"(0008,0090)": "Drplqk^Referrer",
}

// TestServeStatusAndLogsEndToEnd runs the real binary: `serve` receives a study from dcmtk's
// storescu and refuses an association to an unknown AE; `status` must then summarise exactly that,
// and the serve log (JSON lines, debug level) must not contain the patient's identifiers.
func TestServeStatusAndLogsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: end-to-end test with the built binary")
	}
	storescu := testutil.RequireTool(t, "storescu")
	echoscu := testutil.RequireTool(t, "echoscu")
	dcmodify := testutil.RequireTool(t, "dcmodify")
	bin := testutil.BuildDpersona(t)

	// A study whose patient module carries the canaries.
	src, err := filepath.Glob(testutil.Testdata("dicom", "lidc-ct-0004", "*.dcm"))
	if err != nil || len(src) == 0 {
		t.Fatalf("fixture testdata/dicom/lidc-ct-0004: %v", err)
	}
	in := t.TempDir()
	var files []string
	for _, f := range src {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(in, filepath.Base(f))
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, dst)
	}
	modArgs := []string{"-nb"}
	for tag, v := range leakCanaries {
		modArgs = append(modArgs, "-i", tag+"="+v) // insert or modify
	}
	if out, err := exec.Command(dcmodify, append(modArgs, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("dcmodify: %v\n%s", err, out)
	}

	dicomPort, httpPort := testutil.FreePort(t), testutil.FreePort(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	logPath := filepath.Join(t.TempDir(), "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	args := []string{"serve", "--data-dir", t.TempDir(), "--dicom-listen", fmt.Sprintf("127.0.0.1:%d", dicomPort),
		"--http-listen", httpAddr, "--quiet-window", "1s", "--log-level", "debug"}
	if help, _ := exec.Command(bin, "serve", "--help").Output(); bytes.Contains(help, []byte("--roles")) {
		args = append(args, "--roles", "ingest") // this test is about ingest; no model needed
	}
	serve := exec.Command(bin, args...)
	serve.Stdout, serve.Stderr = logFile, logFile
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			serve.Process.Kill()
			<-exited
			t.Error("serve did not stop within 30 s of SIGTERM")
		}
	}
	defer stop()
	testutil.WaitForPort(t, httpAddr, 60*time.Second)
	testutil.WaitForPort(t, fmt.Sprintf("127.0.0.1:%d", dicomPort), 10*time.Second)

	out, err := exec.Command(storescu, "-aet", "STORESCU", "-aec", "DPERSONA", "+sd", "127.0.0.1", fmt.Sprint(dicomPort), in).CombinedOutput()
	if err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	// An association to an AE title the gateway does not serve is rejected.
	if out, err := exec.Command(echoscu, "-aet", "STORESCU", "-aec", "NOT_HERE", "127.0.0.1", fmt.Sprint(dicomPort)).CombinedOutput(); err == nil {
		t.Fatalf("echoscu to an unknown called AE succeeded:\n%s", out)
	}

	testutil.WaitFor(t, 30*time.Second, "the study to leave the receiving state", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/api/studies")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var studies []apiStudy
		if json.NewDecoder(resp.Body).Decode(&studies) != nil {
			return false
		}
		return len(studies) == 1 && studies[0].State != "receiving"
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	statusOut, err := exec.CommandContext(ctx, bin, "status", "--http", httpAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("dpersona status: %v\n%s", err, statusOut)
	}
	t.Logf("dpersona status:\n%s", statusOut)
	n := len(files)
	for _, want := range []string{
		"readiness   ready",
		fmt.Sprintf("studies     1 (%d instances)", n),
		"associations 0 active, 1 accepted, 1 rejected",
		fmt.Sprintf("received    %d instances", n),
		"rejections  called_ae_unknown 1",
	} {
		if !strings.Contains(string(statusOut), want) {
			t.Errorf("status output lacks %q", want)
		}
	}
	if live, err := exec.Command(bin, "status", "--live", "--http", httpAddr).CombinedOutput(); err != nil || len(live) != 0 {
		t.Errorf("status --live: %v %q", err, live)
	}

	stop()
	logFile.Sync()
	logText, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	sc := bufio.NewScanner(bytes.NewReader(logText))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines++
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("log line %d is not JSON: %s", lines, sc.Text())
		}
	}
	if lines < 5 {
		t.Fatalf("serve logged only %d lines; the leak check would prove nothing:\n%s", lines, logText)
	}
	for tag, v := range leakCanaries {
		for _, part := range append([]string{v}, strings.Split(v, "^")...) {
			if bytes.Contains(logText, []byte(part)) {
				t.Errorf("the serve log contains %s value %q", tag, part)
			}
		}
	}
	if !bytes.Contains(logText, []byte("STORESCU")) {
		t.Errorf("the log does not mention the association at all (calling AE STORESCU): is it logging?")
	}
}
