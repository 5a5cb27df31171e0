package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"dpersona/gateway/scu"
	"dpersona/internal/testutil"
)

// A second `serve` on a data directory in use is refused before it touches anything (issue 14
// item 4): it exits non-zero naming the running process's pid, the running one's in-flight file
// in incoming/ is left alone, and the running one keeps serving.
func TestServeSecondProcessOnSameDataDirRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the gateway")
	}
	data := t.TempDir()
	first := startServe(t, data, "--roles", "ingest")
	inflight := filepath.Join(data, "incoming", "1.2.3.4.1.part")
	if err := os.WriteFile(inflight, []byte("half an instance"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, dpersonaBin, "serve", "--data-dir", data, "--roles", "ingest",
		"--dicom-listen", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), "--http-listen", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	out, err := second.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("second serve on the same data directory did not exit with an error (err %v):\n%s", err, out)
	}
	if want := "pid " + strconv.Itoa(first.cmd.Process.Pid); !strings.Contains(string(out), want) || !strings.Contains(string(out), data) {
		t.Fatalf("refusal does not name the data directory and %s:\n%s", want, out)
	}
	if _, err := os.Stat(inflight); err != nil {
		t.Fatalf("the second process touched the first one's incoming/: %v", err)
	}
	c, err := scu.Dial(ctx, first.dicomAddr(), scu.Options{CallingAE: "CHECK", CalledAE: "DPERSONA"}, scu.VerificationProposal())
	if err != nil {
		t.Fatalf("first serve no longer answers: %v", err)
	}
	defer c.Release()
	if err := c.Echo(ctx); err != nil {
		t.Fatal(err)
	}
}

// stallingReader gives a few bytes of a data set and then blocks until the test ends: an
// association busy in the middle of a C-STORE.
type stallingReader struct {
	head []byte
	done <-chan struct{}
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if len(r.head) > 0 {
		n := copy(p, r.head)
		r.head = r.head[n:]
		return n, nil
	}
	<-r.done
	return 0, io.EOF
}

// One shutdown deadline (issue 14 item 7): with shutdown_timeout 2s, SIGTERM while an
// association is stuck in the middle of a data set ends the process within that deadline (plus
// the time to exit), not after the old 30 s + 30 s of separate budgets.
func TestServeShutdownWithinOneDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the gateway")
	}
	cfg := writeConfig(t, `{"shutdown_timeout": "2s"}`)
	p := startServe(t, t.TempDir(), "--roles", "ingest", "--config", cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := testutil.Testdata("dicom", "ct2-pydicom", "17106")
	props, err := scu.ProposalsForFiles([]string{src})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := scu.ReadMeta(src)
	if err != nil {
		t.Fatal(err)
	}
	c, err := scu.Dial(ctx, p.dicomAddr(), scu.Options{CallingAE: "STALL", CalledAE: "DPERSONA"}, props)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); c.Abort() }() // cancel first: it unblocks the stalled Store holding the writer
	go c.Store(ctx, meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID,
		&stallingReader{head: bytes.Repeat([]byte{0}, 1024), done: ctx.Done()}, 1<<20)
	time.Sleep(500 * time.Millisecond) // the server is now inside the C-STORE
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("serve still running 15 s after SIGTERM with shutdown_timeout 2s:\n%s", p.logs.String())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("serve took %v to stop with shutdown_timeout 2s", took)
	}
}
