package testutil

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildDpersona builds the dpersona binary from the current source into the test's temporary
// directory and returns its path. It builds rather than using bin/dpersona, which may be stale;
// the Go build cache makes a second build in the same run a link step only.
func BuildDpersona(t testing.TB) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build dpersona: %v", err)
	}
	out := filepath.Join(t.TempDir(), "dpersona")
	cmd := exec.Command(gobin, "build", "-o", out, "./cmd/dpersona")
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/dpersona: %v\n%s", err, b)
	}
	return out
}
