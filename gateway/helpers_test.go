package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"dpersona/gateway/assembly"
	"dpersona/gateway/part10"
	"dpersona/gateway/store"
	"dpersona/gateway/ul"
	"dpersona/internal/obs"
	"dpersona/internal/testutil"
)

// recordingSink collects completed studies; failUntil makes the first calls fail.
type recordingSink struct {
	mu        sync.Mutex
	studies   []CompletedStudy
	calls     int
	failUntil int
}

func (r *recordingSink) StudyComplete(ctx context.Context, s CompletedStudy) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls <= r.failUntil {
		return fmt.Errorf("bus unavailable (attempt %d)", r.calls)
	}
	r.studies = append(r.studies, s)
	return nil
}

func (r *recordingSink) completed() []CompletedStudy {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]CompletedStudy(nil), r.studies...)
}

// logBuffer is a concurrency-safe log destination, so tests can check what was logged.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type testGateway struct {
	srv     *Server
	asm     *assembly.Assembler
	store   *store.Store
	sink    *recordingSink
	addr    string
	port    int
	dataDir string
	logs    *logBuffer
	cancel  context.CancelFunc
	done    chan struct{}
}

type gatewayOptions struct {
	policy   Policy
	maxAssoc int
	quiet    time.Duration
	dataDir  string
	sink     *recordingSink
	ul       ul.Config
	minFree  uint64
	// maxInstance is the instance size limit (0 = none); tls serves DICOM TLS instead of TCP.
	maxInstance int64
	tls         *tls.Config
	// noSync skips every fsync (benchmarks that split the cost of durability from the rest).
	noSync bool
	// pendingTimeout bounds a connection's wait for its A-ASSOCIATE-RQ (0 = the default).
	pendingTimeout time.Duration
}

func startGateway(t testing.TB, opt gatewayOptions) *testGateway {
	t.Helper()
	if len(opt.policy.AETitles) == 0 {
		opt.policy.AETitles = []string{"DPERSONA"}
	}
	if opt.quiet == 0 {
		opt.quiet = 300 * time.Millisecond
	}
	if opt.dataDir == "" {
		opt.dataDir = t.TempDir()
	}
	if opt.sink == nil {
		opt.sink = &recordingSink{}
	}
	logs := &logBuffer{}
	logger := obs.NewLogger(logs, slog.LevelDebug) // the production logger: JSON, correlation ids
	st, err := store.Open(opt.dataDir, store.Options{NoSync: opt.noSync})
	if err != nil {
		t.Fatal(err)
	}
	asm, err := assembly.New(assembly.Config{Store: st, QuietWindow: opt.quiet, Sink: opt.sink, Logger: logger, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Config{Policy: opt.policy, MaxAssociations: opt.maxAssoc, Logger: logger, UL: opt.ul, MinFreeBytes: opt.minFree, MaxInstanceBytes: opt.maxInstance, PendingTimeout: opt.pendingTimeout}, st, asm)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &testGateway{srv: srv, asm: asm, store: st, sink: opt.sink, addr: l.Addr().String(), port: l.Addr().(*net.TCPAddr).Port, dataDir: opt.dataDir, logs: logs, cancel: cancel, done: make(chan struct{})}
	go func() { asm.Run(ctx); close(g.done) }()
	if opt.tls != nil {
		go srv.ServeTLS(l, opt.tls)
	} else {
		go srv.Serve(l)
	}
	t.Cleanup(func() { g.stop(t) })
	return g
}

func (g *testGateway) stop(t testing.TB) {
	if g.cancel == nil {
		return
	}
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	if err := g.srv.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	g.cancel()
	<-g.done
	g.cancel = nil
	if t.Failed() {
		t.Logf("gateway log:\n%s", g.logs.String())
	}
}

// storedFiles lists the acknowledged instance files under DATA/studies.
func storedFiles(t *testing.T, dataDir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dataDir, "studies", "*", "*", "*", "*.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// runTool runs a dcmtk tool with a bounded time and returns its combined output and error.
func runTool(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	path := testutil.RequireTool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func dicomFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && !strings.HasSuffix(e.Name(), ".npz") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// readFixture reads a Part-10 fixture once and returns its file meta, its identifying attributes
// and its data set (the bytes after the meta group), as a C-STORE sends it.
func readFixture(tb testing.TB, file string) (part10.Meta, part10.Instance, []byte) {
	tb.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	meta, inst, off, err := part10.ReadFileHeader(bytes.NewReader(raw))
	if err != nil {
		tb.Fatalf("%s: %v", file, err)
	}
	return meta, inst, raw[off:]
}
