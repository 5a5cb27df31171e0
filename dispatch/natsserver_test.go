package dispatch

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// The tests run the real nats-server, built from the module this project depends on, as a
// separate process: that is what an operator runs when roles join an external cluster.
var (
	natsServerOnce sync.Once
	natsServerBin  string
	natsServerErr  error
)

func natsServerBinary(t testing.TB) string {
	t.Helper()
	natsServerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dpersona-nats-server-")
		if err != nil {
			natsServerErr = err
			return
		}
		bin := filepath.Join(dir, "nats-server")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
		cmd.Dir = testutil.RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			natsServerErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
			return
		}
		natsServerBin = bin
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerBin
}

// natsProc is one nats-server process on loopback.
type natsProc struct {
	t       testing.TB
	bin     string
	args    []string
	port    int
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// startNATSProcess starts nats-server with JetStream in storeDir on a free loopback port; extra
// args add clustering.
func startNATSProcess(t testing.TB, storeDir string, port int, extra ...string) *natsProc {
	t.Helper()
	if port == 0 {
		port = testutil.FreePort(t)
	}
	p := &natsProc{t: t, bin: natsServerBinary(t), port: port, logPath: filepath.Join(storeDir, "server.log")}
	p.args = append([]string{"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", storeDir}, extra...)
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *natsProc) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.port) }

func (p *natsProc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); logf.Close(); close(done) }(p.cmd, p.done)
	testutil.WaitForPort(p.t, fmt.Sprintf("127.0.0.1:%d", p.port), 20*time.Second)
}

// kill ends the server with SIGKILL (a crash, not a clean shutdown) and waits for it.
func (p *natsProc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
	p.cmd = nil
}

func (p *natsProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// testLogger writes to the test log, so a failing test shows what the bus did.
// Lines logged by goroutines that outlive the test are dropped (t.Log would panic).
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.ended = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	t     testing.TB
	mu    sync.Mutex
	ended bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

var _ io.Writer = (*testWriter)(nil)
