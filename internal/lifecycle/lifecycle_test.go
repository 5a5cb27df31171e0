package lifecycle

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const lockHelperEnv = "DPERSONA_LOCK_HELPER_DIR"

// TestLockHelper is the other process of TestDataDirLockTwoProcesses: it takes the lock, says
// so on stdout and holds it until killed.
func TestLockHelper(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		t.Skip("helper process of TestDataDirLockTwoProcesses")
	}
	if _, err := LockDataDir(dir); err != nil {
		fmt.Println("LOCK FAILED:", err)
		os.Exit(3)
	}
	fmt.Println("LOCKED")
	time.Sleep(time.Minute)
}

// Two real processes on one data directory: the second is refused with an error naming the
// first one's pid; after the first dies (kill -9, no clean-up) the directory can be taken.
func TestDataDirLockTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLockHelper$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "LOCKED" {
		t.Fatalf("helper did not take the lock: %q", line)
	}
	_, err = LockDataDir(dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("second locker: got %v, want ErrLocked naming pid %d", err, cmd.Process.Pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	l, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after the holder was killed: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// A listener that dies (its socket closed under it) stops the whole group: Run returns an error
// naming it, readiness went off, and the other parts were stopped.
func TestListenerFailureStopsTheGroup(t *testing.T) {
	g := NewGroup(nil, 5*time.Second)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	g.Serve("HTTP listener", func() error {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, srv.Shutdown)
	otherStopped := make(chan struct{})
	g.OnStop("workers", func(context.Context) error { close(otherStopped); return nil })
	if err := g.Ready(context.Background()); err != nil {
		t.Fatalf("not ready before any failure: %v", err)
	}
	l.Close() // the listener dies
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "HTTP listener") {
			t.Fatalf("Run returned %v, want the HTTP listener's failure", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a dead listener did not stop the group")
	}
	if g.Ready(context.Background()) == nil {
		t.Fatal("still ready after the failure")
	}
	select {
	case <-otherStopped:
	default:
		t.Fatal("the other parts were not stopped")
	}
}

// One deadline for everything: three parts whose stops take 400 ms each share a 600 ms
// deadline; Run returns after about 600 ms, not 1.2 s, naming what was left, and a clean signal
// with fast parts returns nil.
func TestOneShutdownDeadline(t *testing.T) {
	g := NewGroup(nil, 600*time.Millisecond)
	var mu sync.Mutex
	var deadlines []time.Time
	for i := 0; i < 3; i++ {
		g.OnStop(fmt.Sprintf("slow-%d", i), func(ctx context.Context) error {
			d, _ := ctx.Deadline()
			mu.Lock()
			deadlines = append(deadlines, d)
			mu.Unlock()
			select {
			case <-time.After(400 * time.Millisecond):
			case <-ctx.Done():
			}
			return nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := g.Run(ctx)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "deadline") || !strings.Contains(err.Error(), "slow-0") {
		t.Fatalf("Run: %v, want the deadline error naming the part left", err)
	}
	if took > 900*time.Millisecond {
		t.Fatalf("shutdown took %v with a 600 ms deadline", took)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, d := range deadlines[1:] {
		if !d.Equal(deadlines[0]) {
			t.Fatalf("parts got different deadlines: %v", deadlines)
		}
	}

	fast := NewGroup(nil, time.Second)
	fast.OnStop("quick", func(context.Context) error { return nil })
	if err := fast.Run(ctx); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
}
