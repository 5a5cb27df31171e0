// Package testutil holds what the tests of several packages share: locating real peers (dcmtk,
// dicom3tools, Orthanc, pydicom), the shared data, free loopback ports and bounded waits.
// Only _test.go files import it.
package testutil

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI, where a missing peer is a failure, not a skip:
// `make test` installs every peer, so a missing one there means the set-up is broken.
func InCI() bool { return os.Getenv("CI") != "" }

// RequireTool returns the path of an external program, skipping the test (failing under CI) when
// it is not installed.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if InCI() {
			t.Fatalf("%s is not installed: `make test` runs scripts/setup.sh, which installs it", name)
		}
		t.Skipf("%s is not installed (run scripts/setup.sh)", name)
	}
	return p
}

// RequireORT returns the onnxruntime library the tests use: $envVar when set, else
// third_party/onnxruntime/<fileName> of this checkout (scripts/setup.sh installs it). Without it
// the test is skipped, and fails under CI. The names come from the caller (package inference's
// ORTLibEnv and ORTLibName), because inference's own tests use this package.
func RequireORT(t testing.TB, envVar, fileName string) string {
	t.Helper()
	p := os.Getenv(envVar)
	if p == "" {
		p = filepath.Join(RepoRoot(), "third_party", "onnxruntime", fileName)
	}
	if _, err := os.Stat(p); err != nil {
		if InCI() {
			t.Fatalf("onnxruntime library %s missing: `make test` runs scripts/setup.sh, which installs it", p)
		}
		t.Skipf("onnxruntime library %s missing (run scripts/setup.sh)", p)
	}
	return p
}

// RepoRoot is the module root, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Testdata returns a path under the committed testdata/ folder.
func Testdata(parts ...string) string {
	return filepath.Join(append([]string{RepoRoot(), "testdata"}, parts...)...)
}

// SharedData returns a path under ../shared/data, skipping the test with a clear message when
// that folder is absent (a fresh clone has only testdata/).
func SharedData(t testing.TB, parts ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{RepoRoot(), "..", "shared", "data"}, parts...)...)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared data %s is absent: this test needs the large arrays in ../shared/data", p)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond every 20 ms until it holds or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitForPort waits until something accepts TCP connections on addr.
func WaitForPort(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "listener on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		return false
	})
}

// RequireNodePackage returns the node binary for a script in dir (a folder of this repository
// with its own package.json and package-lock.json), checking that `npm ci` installed pkg there;
// scripts/setup.sh runs it. Without node or the package the test is skipped, and fails under CI.
func RequireNodePackage(t testing.TB, dir, pkg string) string {
	t.Helper()
	node := RequireTool(t, "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
		if InCI() {
			t.Fatalf("%s is not installed in %s: `make test` runs scripts/setup.sh, which runs npm ci there", pkg, dir)
		}
		t.Skipf("%s is not installed in %s (run scripts/setup.sh, or npm ci there)", pkg, dir)
	}
	return node
}
