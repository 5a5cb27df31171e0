package gateway

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"dpersona/gateway/dimse"
	"dpersona/gateway/scu"
	"dpersona/internal/testutil"
)

const fullDiskEnv = "DPERSONA_FULLDISK_DIR"

// A really full disk (a 1.5 MB tmpfs in a private mount namespace, so no privileges are needed):
// the instance that does not fit gets 0xA700 naming the cause, its partial file is removed, the
// instances acknowledged before are intact, and the association keeps working.
func TestFullDiskReturnsOutOfResources(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) is not installed: cannot make a small file system without privileges")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "-rm", "sh", "-c",
		`mount -t tmpfs -o size=1500k tmpfs "$0" || exit 77; exec "$1" -test.run='^TestFullDiskHelper$' -test.v`, dir, os.Args[0])
	cmd.Env = append(os.Environ(), fullDiskEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 77 || err != nil && strings.Contains(string(out), "Operation not permitted") {
		t.Skipf("cannot mount a tmpfs in a user namespace here: %s", out)
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFullDiskHelper") {
		t.Fatalf("full-disk run failed: %v\n%s", err, out)
	}
}

// TestFullDiskHelper runs inside the namespace set up by TestFullDiskReturnsOutOfResources.
func TestFullDiskHelper(t *testing.T) {
	dir := os.Getenv(fullDiskEnv)
	if dir == "" {
		t.Skip("helper of TestFullDiskReturnsOutOfResources")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Blocks*uint64(st.Bsize) > 4<<20 {
		t.Fatalf("%s is not the small tmpfs (%v)", dir, err)
	}
	g := startGateway(t, gatewayOptions{dataDir: dir})
	files := dicomFiles(t, testutil.Testdata("dicom", "lidc-ct-0005"))
	props, _ := scu.ProposalsForFiles(files)
	ctx := context.Background()
	c, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "FILLER", CalledAE: "DPERSONA"}, props)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	var acked []string
	var refused *scu.StatusError
	for _, f := range files {
		res, err := c.StoreFile(ctx, f)
		if err == nil {
			acked = append(acked, res.SOPInstanceUID)
			continue
		}
		if !errors.As(err, &refused) {
			t.Fatalf("store %s: %v", f, err)
		}
		break
	}
	if refused == nil || len(acked) == 0 {
		t.Fatalf("want some instances stored and then a refusal; stored %d, refusal %v", len(acked), refused)
	}
	if refused.Status != dimse.StatusOutOfResources || !strings.Contains(refused.Comment, "no space") {
		t.Fatalf("full disk answered 0x%04X %q, want 0xA700 naming the cause", refused.Status, refused.Comment)
	}
	if err := c.Echo(ctx); err != nil {
		t.Fatalf("association unusable after the refusal: %v", err)
	}
	stored := storedFiles(t, dir)
	if len(stored) != len(acked) {
		t.Fatalf("%d files stored, %d acknowledged", len(stored), len(acked))
	}
	for _, uid := range acked {
		found := false
		for _, p := range stored {
			if filepath.Base(p) == uid+".dcm" {
				fi, _ := os.Stat(p)
				found = fi.Size() > 500000
			}
		}
		if !found {
			t.Fatalf("acknowledged %s missing or truncated", uid)
		}
	}
	if e, _ := os.ReadDir(filepath.Join(dir, "incoming")); len(e) != 0 {
		t.Fatalf("partial file left in incoming: %v", e)
	}
}
