package dicomio

import (
	"image/color"
	"path/filepath"
	"testing"
)

// A cropped preview shows the window around the segments: every outline pixel of the crop maps
// back (through the window's origin) to a pixel inside its segment, and the window holds the
// segment's centre.
func TestRenderPreviewCropsAroundSegments(t *testing.T) {
	src := loadFixture(t, "lidc-ct-0005")
	n := src.Rows * src.Cols
	mask := make([]uint8, n)
	for y := 400; y < 412; y++ {
		for x := 306; x < 318; x++ {
			mask[y*src.Cols+x] = 1
		}
	}
	masks := make([][]uint8, len(src.Slices))
	masks[3] = mask
	path := filepath.Join(t.TempDir(), "seg.dcm")
	if _, err := WriteSEGFile(path, src, SEGDescription{Equipment: testEquipment, Type: Binary, Segments: segmentDescs("nodule")}, [][][]uint8{masks}); err != nil {
		t.Fatal(err)
	}
	seg, err := ReadSEG(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := RenderPreview(src, 3, seg, PreviewOptions{Crop: 64})
	if err != nil {
		t.Fatal(err)
	}
	scale := 6 // 64 px enlarged to at least 384
	if b := img.Bounds(); b.Dx() != 64*scale {
		t.Fatalf("image %v, want %d wide", b, 64*scale)
	}
	oy, ox := 405-32, 311-32 // centred on the segment: mean row 405.5, column 311.5, in whole pixels
	p := Palette[0]
	painted := 0
	for y := 0; y < 64*scale; y++ {
		for x := 0; x < 64*scale; x++ {
			if img.RGBAAt(x, y) == (color.RGBA{p[0], p[1], p[2], 255}) {
				if mask[(oy+y/scale)*src.Cols+ox+x/scale] == 0 {
					t.Fatalf("outline at display (%d,%d) outside the segment", x, y)
				}
				painted++
			}
		}
	}
	if painted < 4*12*scale-8 {
		t.Fatalf("%d outline pixels, want the square's outline (about %d)", painted, 4*12*scale)
	}
}
