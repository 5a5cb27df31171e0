package dicomio

import "math"

// srgbToDICOMLab converts an sRGB colour to the scaled CIELab of RecommendedDisplayCIELabValue
// (PS3.3 C.10.7.1.1: L 0..100 -> 0..65535, a and b -128..127 -> 0..65535). The values are
// PCS-Values as in ICC profiles, whose illuminant is D50: sRGB's D65 XYZ is adapted to D50 with
// the linear Bradford transform first. (A D65 white point, as used here before, shifted every
// colour a viewer shows: dcmjs, which OHIF uses, converts back with D50.)
func srgbToDICOMLab(c [3]uint8) (uint16, uint16, uint16) {
	lin := func(v uint8) float64 {
		x := float64(v) / 255
		if x <= 0.04045 {
			return x / 12.92
		}
		return math.Pow((x+0.055)/1.055, 2.4)
	}
	r, g, b := lin(c[0]), lin(c[1]), lin(c[2])
	// sRGB (IEC 61966-2-1) to XYZ, D65.
	x65 := 0.4124*r + 0.3576*g + 0.1805*b
	y65 := 0.2126*r + 0.7152*g + 0.0722*b
	z65 := 0.0193*r + 0.1192*g + 0.9505*b
	// Bradford chromatic adaptation D65 -> D50, then relative to the ICC PCS white (D50).
	x := (1.0478112*x65 + 0.0228866*y65 - 0.0501270*z65) / 0.9642
	y := 0.0295424*x65 + 0.9904844*y65 - 0.0170491*z65
	z := (-0.0092345*x65 + 0.0150436*y65 + 0.7521316*z65) / 0.8249
	f := func(t float64) float64 {
		if t > 216.0/24389 {
			return math.Cbrt(t)
		}
		return (24389.0/27*t + 16) / 116
	}
	L := 116*f(y) - 16
	A := 500 * (f(x) - f(y))
	B := 200 * (f(y) - f(z))
	scale := func(v, lo, hi float64) uint16 {
		s := (v - lo) / (hi - lo) * 65535
		return uint16(math.Round(math.Min(65535, math.Max(0, s))))
	}
	return scale(L, 0, 100), scale(A, -128, 127), scale(B, -128, 127)
}

// Palette is the set of distinct colours used for segment outlines and display colours.
var Palette = [][3]uint8{
	{230, 25, 75}, {60, 180, 75}, {255, 225, 25}, {0, 130, 200}, {245, 130, 48}, {145, 30, 180},
	{70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {250, 190, 212}, {0, 128, 128}, {220, 190, 255},
	{170, 110, 40}, {255, 250, 200}, {128, 0, 0}, {170, 255, 195},
}
