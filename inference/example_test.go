package inference_test

import (
	"context"
	"fmt"
	"path/filepath"

	"dpersona/inference"
)

// Load a model bundle (the manifest is validated and every file checked against its SHA-256)
// and derive a study's noise: the same study UID and seed give the same samples, so a re-run
// gives the same masks.
func Example() {
	b, err := inference.LoadBundle(filepath.Join("testdata", "tiny"))
	if err != nil {
		panic(err)
	}
	in := b.Manifest.Input
	fmt.Printf("%s: input %dx%dx%d, latent size %d\n", b.Label(), in.Channels, in.Height, in.Width, b.Manifest.LatentSize)
	for _, r := range b.Manifest.Raters {
		fmt.Printf("head %d: %s\n", r.Index, r.DisplayName)
	}
	noise := inference.StudyNoise("1.2.826.0.1.3680043.8.498.1", 0, 10, 50, b.Manifest.LatentSize)
	again := inference.StudyNoise("1.2.826.0.1.3680043.8.498.1", 0, 10, 50, b.Manifest.LatentSize)
	fmt.Println("samples", len(noise.Samples), "bank", len(noise.Bank), "reproducible", noise.Samples[7] == again.Samples[7] && noise.Bank[99] == again.Bank[99])
	// Output:
	// dpersona-test-tiny test-fixture: input 1x128x128, latent size 6
	// head 0: Rater 1 (smallest outline)
	// head 1: Rater 2
	// head 2: Rater 3
	// head 3: Rater 4 (largest outline)
	// samples 60 bank 300 reproducible true
}

// Run both D-Persona stages on model inputs (already cut and intensity-mapped, e.g. by
// dicomio.PlanTilesForSeries and ExtractTiles). It needs the onnxruntime shared library
// (scripts/setup.sh installs it; $DPERSONA_ORT_LIB names another), so this example is compiled but
// not run; engine_test.go runs the same calls.
func ExampleEngine_Predict() {
	b, err := inference.LoadBundle(filepath.Join("testdata", "tiny"))
	if err != nil {
		panic(err)
	}
	e, err := inference.NewEngine(b, inference.EngineOptions{}) // library from $DPERSONA_ORT_LIB or third_party/
	if err != nil {
		panic(err)
	}
	defer e.Close()
	in := b.Manifest.Input
	tiles := 2
	image := make([]float32, tiles*in.Channels*in.Height*in.Width) // [tiles, C, H, W] in [0,1]
	noise := inference.StudyNoise("1.2.826.0.1.3680043.8.498.1", 0, 10, 50, b.Manifest.LatentSize)
	p, err := e.Predict(context.Background(), image, tiles, noise)
	if err != nil {
		panic(err)
	}
	samples, raters := p.Tile(0) // [S*H*W] sample maps, [R*H*W] one map per rater head
	consensus, uncertainty := inference.ConsensusAndUncertainty(samples, p.S, p.H*p.W)
	fmt.Println(len(raters)/(p.H*p.W), "rater maps,", len(consensus), len(uncertainty), "pixels")
}
