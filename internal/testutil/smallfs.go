package testutil

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SmallFSEnv names the directory of the small file system in the helper's environment.
const SmallFSEnv = "DPERSONA_SMALLFS_DIR"

// RunInSmallTmpfs runs the test function helper of the calling test binary inside a private mount
// namespace (unshare -rm: no privileges needed) where a tmpfs of the given size (mount's size=,
// e.g. "48m") is mounted on a fresh directory, passed to the helper in SmallFSEnv; the helper
// gets it with SmallTmpfs. The mount disappears with the helper. The test is skipped, clearly,
// where user namespaces or tmpfs mounts are not permitted.
func RunInSmallTmpfs(t *testing.T, size, helper string, timeout time.Duration) {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) is not installed: cannot make a small file system without privileges")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "-rm", "sh", "-c",
		`mount -t tmpfs -o size="$2" tmpfs "$0" || exit 77; exec "$1" -test.run="^$3\$" -test.v -test.count=1`, dir, os.Args[0], size, helper)
	cmd.Env = append(os.Environ(), SmallFSEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 77 || err != nil && strings.Contains(string(out), "Operation not permitted") {
		t.Skipf("cannot mount a tmpfs in a user namespace here: %s", out)
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: "+helper) {
		t.Fatalf("run in a %s tmpfs failed: %v\n%s", size, err, out)
	}
	t.Logf("%s", out)
}

// SmallTmpfs returns the tmpfs directory of a helper run by RunInSmallTmpfs, skipping when the
// helper runs on its own, and checks that it really is a file system of at most maxBytes.
func SmallTmpfs(t testing.TB, maxBytes uint64) string {
	t.Helper()
	dir := os.Getenv(SmallFSEnv)
	if dir == "" {
		t.Skip("helper run by RunInSmallTmpfs")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Blocks*uint64(st.Bsize) > maxBytes {
		t.Fatalf("%s is not the small tmpfs (%v)", dir, err)
	}
	return dir
}

// FillDisk writes a file at path until the file system is full and returns its size; removing
// the file gives the space back.
func FillDisk(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return n
			}
			t.Fatal(err)
		}
	}
}
