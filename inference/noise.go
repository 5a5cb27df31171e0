package inference

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
)

// Noise is the standard normal noise of one study: Samples [S*L] for stage I (z = mu + sigma*eps)
// and Bank [K*L] for the stage-II bank of prior samples. The same draws serve every tile and
// slice of the study, so sample j is one coherent latent "persona" across the whole volume.
type Noise struct {
	S, K, L int
	Samples []float32
	Bank    []float32
}

// StudyNoise derives the noise deterministically from the study UID and a seed: a re-run of the
// same study with the same seed gives the same masks. The two streams are independent, and each is
// a prefix-stable sequence (the first 10 of 50 samples equal the 10 samples of S=10).
//
// Generator: ChaCha8 (C2SP chacha8rand, fixed output for a seed) keyed with
// SHA-256("dpersona-noise/v1" | stream | studyUID | seed); each normal value comes from two
// 53-bit uniforms through the Box-Muller transform (cosine branch only).
func StudyNoise(studyUID string, seed int64, s, k, l int) Noise {
	return Noise{S: s, K: k, L: l,
		Samples: normalStream("samples", studyUID, seed, s*l),
		Bank:    normalStream("bank", studyUID, seed, k*l)}
}

func normalStream(stream, studyUID string, seed int64, n int) []float32 {
	h := sha256.New()
	for _, part := range []string{"dpersona-noise/v1", stream, studyUID, strconv.FormatInt(seed, 10)} {
		var lenBuf [8]byte
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(part)))
		h.Write(lenBuf[:])
		h.Write([]byte(part))
	}
	var key [32]byte
	copy(key[:], h.Sum(nil))
	rng := rand.NewChaCha8(key)
	uniform := func() float64 { return (float64(rng.Uint64()>>11) + 0.5) / (1 << 53) } // (0,1)
	out := make([]float32, n)
	for i := range out {
		u1, u2 := uniform(), uniform()
		out[i] = float32(math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2))
	}
	return out
}
