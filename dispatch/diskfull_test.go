package dispatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// Disk full and back (issue 14 item 1), on a real 48 MB tmpfs holding the data directory and the
// embedded JetStream store: a study is processed; the disk is filled to ENOSPC; a second study
// cannot be stored in the bus and the bus reports itself unhealthy (readiness); once space is
// freed, the bus recovers by itself (no restart), the second study is accepted and processed
// by the same worker, and the first study's state survived.
func TestBusRecoversAfterDiskFull(t *testing.T) {
	testutil.RunInSmallTmpfs(t, "48m", "TestBusDiskFullHelper", 3*time.Minute)
}

func TestBusDiskFullHelper(t *testing.T) {
	data := testutil.SmallTmpfs(t, 49<<20)
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	proc := newFixtureProcessor("w1")
	h.infer(b, fastInfer(proc, ctRoute()))
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	go b.RunStorageRecovery(rctx)
	ctx := context.Background()

	first := ct2Study(t, data, "DPERSONA", "2.25.100")
	if err := b.PublishStudyComplete(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, "DPERSONA", "2.25.100", StateDone, 30*time.Second)
	second := ct2Study(t, data, "DPERSONA", "2.25.200")

	filler := filepath.Join(data, "filler")
	n := testutil.FillDisk(t, filler)
	t.Logf("filled the disk with %d MB", n>>20)
	// Publishing while full fails (the assembler keeps the study and retries); the bus says so.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := b.PublishStudyComplete(pctx, second)
	cancel()
	if err == nil {
		// The event itself may still fit in a partly written block; the study state write must not.
		t.Log("publish while full succeeded")
	} else {
		t.Logf("publish while full: %v", err)
	}
	testutil.WaitFor(t, 20*time.Second, "bus unhealthy while the disk is full", func() bool {
		hctx, c := context.WithTimeout(ctx, 2*time.Second)
		defer c()
		return b.Healthy(hctx) != nil
	})

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testutil.WaitFor(t, 60*time.Second, "bus healthy again after space returned", func() bool {
		hctx, c := context.WithTimeout(ctx, 2*time.Second)
		defer c()
		return b.Healthy(hctx) == nil
	})
	testutil.WaitFor(t, 60*time.Second, "second study accepted by the bus", func() bool {
		pctx, c := context.WithTimeout(ctx, 5*time.Second)
		defer c()
		return b.PublishStudyComplete(pctx, second) == nil
	})
	waitState(t, b, "DPERSONA", "2.25.200", StateDone, 60*time.Second)
	t.Logf("recovered and processed the second study %v after space returned", time.Since(start).Round(100*time.Millisecond))
	if st, err := b.StudyState(ctx, "DPERSONA", "2.25.100"); err != nil || st == nil || st.State != StateDone {
		t.Fatalf("first study's state lost: %+v %v", st, err)
	}
}
