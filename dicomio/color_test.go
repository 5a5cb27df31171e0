package dicomio

import "testing"

// TestDICOMLabIsD50: RecommendedDisplayCIELabValue holds ICC PCS-Values, relative to D50 (PS3.3
// C.10.7.1.1), so sRGB white is L 100, a 0, b 0 and sRGB red is CIELab (54.29, 80.81, 69.89),
// the published D50 (Bradford) value; the D65 white point used before gave (53.24, 80.09, 67.20),
// which dcmjs and OHIF turn back into a visibly different colour.
func TestDICOMLabIsD50(t *testing.T) {
	scaled := func(l, a, b float64) [3]float64 {
		return [3]float64{l / 100 * 65535, (a + 128) / 255 * 65535, (b + 128) / 255 * 65535}
	}
	for _, c := range []struct {
		rgb  [3]uint8
		want [3]float64
	}{
		{[3]uint8{255, 255, 255}, scaled(100, 0, 0)},
		{[3]uint8{255, 0, 0}, scaled(54.29, 80.81, 69.89)},
		{[3]uint8{0, 0, 255}, scaled(29.57, 68.30, -112.03)},
	} {
		l, a, b := srgbToDICOMLab(c.rgb)
		for i, v := range []uint16{l, a, b} {
			// 0.05 CIELab units of tolerance: the published values are rounded to 0.01.
			if d := float64(v) - c.want[i]; d < -33 || d > 33 {
				t.Errorf("sRGB %v -> DICOM CIELab (%d, %d, %d), want about (%.0f, %.0f, %.0f)", c.rgb, l, a, b, c.want[0], c.want[1], c.want[2])
				break
			}
		}
	}
}
