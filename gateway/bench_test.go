package gateway

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"dpersona/gateway/part10"
	"dpersona/internal/testutil"
)

// BenchmarkReceiveStorescu profiles the receive path (go test -bench ReceiveStorescu -cpuprofile):
// 8 parallel storescu associations send 96 distinct 0.5 MB CT instances per iteration into a fresh
// gateway. The sub-benchmarks split the cost of durability from the rest in the same run: "fsync"
// is the product (fsync of every instance and its directory before the success status),
// "no-fsync" the same path with the fsyncs left out (never a production setting); each also runs
// with the disk watermark's reserve-before-write on. The speed
// comparison with storescp is scripts/bench-gateway.sh.
func BenchmarkReceiveStorescu(b *testing.B) {
	bin := testutil.RequireTool(b, "storescu")
	const assocs, copies = 8, 8
	work := b.TempDir()
	var files []string
	for _, folder := range []string{"lidc-ct-0004", "lidc-ct-0005"} {
		for _, src := range dicomFiles(b, testutil.Testdata("dicom", folder)) {
			f, err := os.Open(src)
			if err != nil {
				b.Fatal(err)
			}
			_, inst, _, err := part10.ReadFileHeader(f)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < copies; i++ {
				dst := filepath.Join(work, fmt.Sprintf("%s-%s-%d.dcm", folder, filepath.Base(src), i))
				uid := inst.SOPInstanceUID
				testutil.CloneDICOM(b, src, dst, map[string]string{uid: testutil.SameLengthUID(uid, 100+i)})
				files = append(files, dst)
			}
		}
	}
	var size int64
	for _, f := range files {
		st, _ := os.Stat(f)
		size += st.Size()
	}
	// "+watermark" turns the disk watermark on (1 MB, never reached here), so every 256 KiB write
	// first reserves its bytes with a statfs (gateway/store): its cost against the same path
	// without, in the same run.
	for _, mode := range []struct {
		name    string
		noSync  bool
		minFree uint64
	}{{"fsync", false, 0}, {"fsync+watermark", false, 1 << 20}, {"no-fsync", true, 0}, {"no-fsync+watermark", true, 1 << 20}} {
		b.Run(mode.name, func(b *testing.B) {
			b.SetBytes(size)
			var elapsed time.Duration
			for n := 0; n < b.N; n++ {
				// A fresh gateway and data directory per iteration: every instance is new to it.
				b.StopTimer()
				g := startGateway(b, gatewayOptions{noSync: mode.noSync, quiet: time.Hour, minFree: mode.minFree})
				b.StartTimer()
				start := time.Now()
				sendParallel(b, bin, g.port, files, assocs)
				elapsed += time.Since(start)
				b.StopTimer()
				g.stop(b)
				b.StartTimer()
			}
			b.ReportMetric(float64(len(files)*b.N)/elapsed.Seconds(), "instances/s")
		})
	}
}

// sendParallel sends files round-robin over assocs parallel storescu processes.
func sendParallel(b *testing.B, bin string, port int, files []string, assocs int) {
	var wg sync.WaitGroup
	for a := 0; a < assocs; a++ {
		var list []string
		for i := a; i < len(files); i += assocs {
			list = append(list, files[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(bin, append([]string{"-aet", "BENCH", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(port)}, list...)...)
			cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Errorf("storescu: %v\n%s", err, out)
			}
		}()
	}
	wg.Wait()
}
