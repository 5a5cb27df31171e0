package dicomio

import (
	"image/color"
	"testing"

	"dpersona/internal/testutil"
)

func TestRenderPreviewOutlinesInsideSegments(t *testing.T) {
	src := loadFixture(t, "ct2-pydicom")
	seg, err := ReadSEG(testutil.Testdata("dicom", "seg-highdicom", "seg_image_ct_binary_overlap.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	masks, err := seg.MasksFor(src)
	if err != nil {
		t.Fatal(err)
	}
	for index := range src.Slices {
		img, err := RenderPreview(src, index, seg, PreviewOptions{MinSize: 160})
		if err != nil {
			t.Fatal(err)
		}
		scale := 10 // 16 px enlarged to at least 160
		w, h := src.Cols*scale, src.Rows*scale
		if b := img.Bounds(); b.Dx() != w || b.Dy() <= h {
			t.Fatalf("image %v, want %d wide and taller than %d (legend)", b, w, h)
		}
		painted := make([]int, len(masks))
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := img.RGBAAt(x, y)
				for k := range masks {
					p := Palette[k]
					if c == (color.RGBA{p[0], p[1], p[2], 255}) {
						m := masks[k][index]
						if m == nil || m[(y/scale)*src.Cols+x/scale] == 0 {
							t.Fatalf("slice %d: outline of segment %d at (%d,%d) outside the segment", index, k+1, x, y)
						}
						painted[k]++
					}
				}
			}
		}
		for k := range masks {
			if (masks[k][index] != nil) != (painted[k] > 0) {
				t.Fatalf("slice %d segment %d: frame present %v, outline pixels %d", index, k+1, masks[k][index] != nil, painted[k])
			}
		}
		// Legend swatches in segment colours below the image.
		for k := range masks {
			p := Palette[k]
			if c := img.RGBAAt(12, h+8+k*14+6); c != (color.RGBA{p[0], p[1], p[2], 255}) {
				t.Fatalf("legend swatch %d is %v", k+1, c)
			}
		}
	}
	// A SEG that references other instances is refused rather than drawn on the wrong slice.
	other := loadFixture(t, "ct5n-pydicom")
	if _, err := RenderPreview(other, 0, seg, PreviewOptions{}); err == nil {
		t.Fatal("SEG of another series rendered")
	}
}
