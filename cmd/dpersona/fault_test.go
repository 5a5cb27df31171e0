package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// storescuRun is one storescu process whose verbose output is parsed as it runs: a file counts as
// acknowledged when "Received Store Response (Success)" follows its "Sending file:" line.
type storescuRun struct {
	mu      sync.Mutex
	current string
	acked   []string
	out     strings.Builder
	done    chan error
}

func startStorescu(t *testing.T, port int, files []string) *storescuRun {
	t.Helper()
	bin := testutil.RequireTool(t, "storescu")
	r := &storescuRun{done: make(chan error, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	args := append([]string{"-v", "-R", "-aet", "MODALITY", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(port)}, files...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer cancel()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			r.mu.Lock()
			r.out.WriteString(line + "\n")
			switch {
			case strings.Contains(line, "Sending file: "):
				r.current = strings.TrimSpace(line[strings.Index(line, "Sending file: ")+len("Sending file: "):])
			case strings.Contains(line, "Received Store Response (Success)"):
				r.acked = append(r.acked, r.current)
			}
			r.mu.Unlock()
		}
		r.done <- cmd.Wait()
	}()
	return r
}

func (r *storescuRun) ackedFiles() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.acked...)
}

// kill -9 of the real gateway process during 8 parallel storescu associations, then a restart:
// every instance storescu saw acknowledged is on disk exactly once, no temporary file survives the
// restart, and once the senders retry, both studies complete with every instance exactly once.
func TestServeKill9DuringParallelStorescu(t *testing.T) {
	const associations, perAssociation = 8, 30
	work := t.TempDir()
	// Two studies (two real CT slices), each cloned with fresh SOP instance UIDs; association i
	// sends perAssociation instances of study i%2.
	sources := []string{testutil.Testdata("dicom", "lidc-ct-0004", "001.dcm"), testutil.Testdata("dicom", "lidc-ct-0005", "001.dcm")}
	uidOf := map[string]string{} // file -> SOP instance UID
	groups := make([][]string, associations)
	wantStudy := map[string]int{}
	for i := range groups {
		src := sources[i%2]
		inst := fileInstance(t, src)
		wantStudy[inst.StudyInstanceUID] += perAssociation
		for j := 0; j < perAssociation; j++ {
			uid := testutil.SameLengthUID(inst.SOPInstanceUID, 10000+i*1000+j)
			dst := filepath.Join(work, fmt.Sprintf("a%d-%02d.dcm", i, j))
			testutil.CloneDICOM(t, src, dst, map[string]string{inst.SOPInstanceUID: uid})
			uidOf[dst] = uid
			groups[i] = append(groups[i], dst)
		}
	}
	dataDir := filepath.Join(work, "data")
	p := startServe(t, dataDir, "--quiet-window", "1500ms")

	runs := make([]*storescuRun, associations)
	for i, g := range groups {
		runs[i] = startStorescu(t, p.dicomPort, g)
	}
	total := func() int {
		n := 0
		for _, r := range runs {
			n += len(r.ackedFiles())
		}
		return n
	}
	// Kill once a good part is acknowledged and the rest is still in flight.
	testutil.WaitFor(t, 60*time.Second, "a quarter of the instances acknowledged", func() bool { return total() >= associations*perAssociation/4 })
	p.kill9()
	for i, r := range runs {
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("storescu %d did not end after the gateway was killed", i)
		}
	}
	acked := map[string]bool{}
	for _, r := range runs {
		for _, f := range r.ackedFiles() {
			acked[uidOf[f]] = true
		}
	}
	if len(acked) == associations*perAssociation {
		t.Fatalf("every instance was acknowledged before the kill landed; the test proves nothing")
	}
	t.Logf("killed with %d of %d instances acknowledged", len(acked), associations*perAssociation)
	onDisk := countByInstance(t, dataDir)
	for uid := range acked {
		if onDisk[uid] != 1 {
			t.Fatalf("acknowledged instance %s present %d times after the kill", uid, onDisk[uid])
		}
	}
	leftBefore, _ := os.ReadDir(filepath.Join(dataDir, "incoming"))
	t.Logf("%d temporary files in incoming/ after the kill (never acknowledged)", len(leftBefore))

	p2 := startServe(t, dataDir, "--quiet-window", "1500ms")
	if e, _ := os.ReadDir(filepath.Join(dataDir, "incoming")); len(e) != 0 {
		t.Fatalf("%d temporary files survived the restart", len(e))
	}
	onDisk = countByInstance(t, dataDir)
	for uid := range acked {
		if onDisk[uid] != 1 {
			t.Fatalf("acknowledged instance %s present %d times after the restart", uid, onDisk[uid])
		}
	}
	// The senders retry everything; the studies complete with each instance exactly once.
	runs = runs[:0]
	for _, g := range groups {
		runs = append(runs, startStorescu(t, p2.dicomPort, g))
	}
	for i, r := range runs {
		if err := <-r.done; err != nil {
			t.Fatalf("re-send %d: %v\n%s", i, err, r.out.String())
		}
	}
	p2.waitStudies(t, wantStudy)
	onDisk = countByInstance(t, dataDir)
	if len(onDisk) != associations*perAssociation {
		t.Fatalf("%d instances on disk, %d sent", len(onDisk), associations*perAssociation)
	}
	for uid, n := range onDisk {
		if n != 1 {
			t.Fatalf("instance %s stored %d times", uid, n)
		}
	}
}
