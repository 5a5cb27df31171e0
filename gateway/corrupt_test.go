package gateway

import (
	"math/rand"
	"testing"
)

// Deterministic random corruptions of the ingest seeds (the same harness as FuzzIngest), so every
// `go test` run exercises a few hundred broken streams, not only the seeds.
func TestIngestRandomCorruptions(t *testing.T) {
	h := newIngestHarness(t, t.TempDir())
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		in := append([]byte(nil), h.seeds[i%len(h.seeds)]...)
		switch i % 3 {
		case 0: // flip bytes
			for k := 0; k < 1+r.Intn(4); k++ {
				in[r.Intn(len(in))] = byte(r.Intn(256))
			}
		case 1: // truncate
			in = in[:r.Intn(len(in))]
		case 2: // duplicate a slice somewhere
			a := r.Intn(len(in))
			b := a + r.Intn(len(in)-a)
			at := r.Intn(len(in))
			in = append(in[:at:at], append(append([]byte{}, in[a:b]...), in[at:]...)...)
		}
		h.run(t, in)
	}
}
