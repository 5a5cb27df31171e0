package dicomio

import (
	"os"
	"testing"

	"github.com/suyashkumar/dicom"
)

// BenchmarkLIDC0005 measures the dicomio stages on the 7-slice 512x512 LIDC fixture, next to two
// baselines measured in the same run: reading the files (I/O floor) and the library's own full
// parse with its pixel decoding (what LoadSeries would cost if it used the library's frames).
func BenchmarkLIDC0005(b *testing.B) {
	paths := fixturePaths(b, "lidc-ct-0005")
	s, err := LoadSeries(paths)
	if err != nil {
		b.Fatal(err)
	}
	spec := lidcInput(b)
	plan, err := PlanTilesForSeries(spec, s)
	if err != nil {
		b.Fatal(err)
	}
	const maps = 4
	outputs := make([][]float32, len(s.Slices))
	for i, sl := range s.Slices {
		batch, _ := plan.ExtractTiles(sl.Pixels)
		outputs[i] = identityModel(batch, len(plan.Tiles), 1, 128, 128, maps)
	}
	masks := syntheticMasks(s, maps)
	desc := SEGDescription{Equipment: testEquipment, Type: Binary, Segments: segmentDescs("r1", "r2", "r3", "r4"), ContentLabel: "BENCH"}

	b.Run("baseline-ReadFiles", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, p := range paths {
				if _, err := os.ReadFile(p); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("baseline-LibraryParseFile", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, p := range paths {
				if _, err := dicom.ParseFile(p, nil); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("LoadSeries", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := LoadSeries(paths); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ExtractTiles", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, sl := range s.Slices {
				if _, err := plan.ExtractTiles(sl.Pixels); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("Blend4Maps", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, out := range outputs {
				if _, err := plan.Blend(out, maps); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("EncodeSEG4Segments", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := EncodeSEG(s, desc, masks); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("LoadTileBlendEncode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			s, err := LoadSeries(paths)
			if err != nil {
				b.Fatal(err)
			}
			p, _ := PlanTilesForSeries(spec, s)
			segMasks := make([][][]uint8, maps)
			for k := range segMasks {
				segMasks[k] = make([][]uint8, len(s.Slices))
			}
			for j, sl := range s.Slices {
				batch, _ := p.ExtractTiles(sl.Pixels)
				probs, err := p.Blend(identityModel(batch, len(p.Tiles), 1, 128, 128, maps), maps)
				if err != nil {
					b.Fatal(err)
				}
				for k := range probs {
					segMasks[k][j] = Threshold(probs[k], 0.5)
				}
			}
			if _, _, err := EncodeSEG(s, desc, segMasks); err != nil {
				b.Fatal(err)
			}
		}
	})
}
