package dicomio_test

import (
	"fmt"
	"os"
	"path/filepath"

	"dpersona/dicomio"
	"dpersona/internal/testutil"
)

// A chest CT series in (LIDC-IDRI slices), model inputs cut from each slice, the model's maps blended back onto the
// slice grid, and a DICOM-SEG written and read back. A threshold on the windowed input stands in
// for the model (inference.Engine.Predict in the pipeline).
func Example() {
	files, err := dicomio.SeriesFiles(testutil.Testdata("dicom", "lidc-ct-0004"))
	if err != nil {
		panic(err)
	}
	s, err := dicomio.LoadSeries(files) // sorted along the slice normal, geometry checked
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s series: %d slices of %dx%d\n", s.Modality, len(s.Slices), s.Rows, s.Cols)

	spec := dicomio.InputSpec{Channels: 1, Height: 128, Width: 128, // a bundle's manifest "input"
		Intensity: dicomio.IntensitySpec{Mode: "window", Center: 40, Width: 400},
		Tiling:    dicomio.TilingSpec{Mode: "tile", Overlap: 32}}
	plan, err := dicomio.PlanTilesForSeries(spec, s)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d tiles of %dx%d per slice\n", len(plan.Tiles), spec.Height, spec.Width)

	masks := make([][]uint8, len(s.Slices)) // one segment: masks[slice] = Rows*Cols
	for i, sl := range s.Slices {
		batch, err := plan.ExtractTiles(sl.Pixels) // [tiles, C, H, W] in [0,1]
		if err != nil {
			panic(err)
		}
		out := make([]float32, len(batch)) // the stand-in model: one map per tile
		for j, v := range batch {
			if v > 0.9 {
				out[j] = 1
			}
		}
		maps, err := plan.Blend(out, 1) // one Rows*Cols map on the source grid
		if err != nil {
			panic(err)
		}
		masks[i] = dicomio.Threshold(maps[0], 0.5)
	}

	dir, err := os.MkdirTemp("", "dicomio-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "seg.dcm")
	algorithm := dicomio.Algorithm{Type: dicomio.Automatic, Name: "threshold", Version: "1", Family: dicomio.AlgorithmFamilyAI}
	info, err := dicomio.WriteSEGFile(path, s, dicomio.SEGDescription{
		Type: dicomio.Binary,
		Segments: []dicomio.SegmentDescription{{Label: "Dense tissue", Algorithm: algorithm,
			Category: dicomio.Code{Scheme: "SCT", Code: "91723000", Meaning: "Anatomical Structure"},
			Type:     dicomio.Code{Scheme: "SCT", Code: "85756007", Meaning: "Tissue"}}},
		SeriesDescription: "Example segmentation", ContentLabel: "EXAMPLE",
		Equipment: dicomio.Equipment{Manufacturer: "dpersona", ManufacturerModelName: "dpersona",
			DeviceSerialNumber: "example", SoftwareVersions: "example"},
	}, [][][]uint8{masks})
	if err != nil {
		panic(err)
	}
	seg, err := dicomio.ReadSEG(path)
	if err != nil {
		panic(err)
	}
	back, err := seg.MasksFor(s)
	if err != nil {
		panic(err)
	}
	written, read := 0, 0
	for i := range masks {
		written += count(masks[i])
		read += count(back[0][i]) // nil: no frame, the slice had no pixel in the segment
	}
	fmt.Printf("SEG %s: %d segment, %d frames, %d pixels written, %d read back\n", seg.Type, len(seg.Segments), info.Frames, written, read)
	// Output:
	// CT series: 5 slices of 512x512
	// 25 tiles of 128x128 per slice
	// SEG BINARY: 1 segment, 5 frames, 19829 pixels written, 19829 read back
}

func count(mask []uint8) int {
	n := 0
	for _, v := range mask {
		n += int(v)
	}
	return n
}
