package gateway

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"dpersona/gateway/part10"
	"dpersona/internal/testutil"
)

// BenchmarkReceiveStorescu profiles the receive path (go test -bench ReceiveStorescu -cpuprofile):
// 8 parallel storescu associations send 96 distinct 0.5 MB CT instances per iteration into a
// gateway that fsyncs every instance. The speed comparison with storescp is
// scripts/bench-gateway.sh; this is for pprof.
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
	g := startGateway(b, gatewayOptions{})
	var size int64
	for _, f := range files {
		st, _ := os.Stat(f)
		size += st.Size()
	}
	b.SetBytes(size)
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		var wg sync.WaitGroup
		for a := 0; a < assocs; a++ {
			var list []string
			for i := a; i < len(files); i += assocs {
				list = append(list, files[i])
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(bin, append([]string{"-aet", "BENCH", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)}, list...)...)
				cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Errorf("storescu: %v\n%s", err, out)
				}
			}()
		}
		wg.Wait()
	}
	b.ReportMetric(float64(len(files)*b.N)/b.Elapsed().Seconds(), "instances/s")
}
