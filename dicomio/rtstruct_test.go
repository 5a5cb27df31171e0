package dicomio

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"dpersona/internal/testutil"

	"github.com/suyashkumar/dicom/pkg/tag"
)

func roiDescs(names ...string) []ROIDescription {
	out := make([]ROIDescription, len(names))
	for i, n := range names {
		out[i] = ROIDescription{Name: n, Description: "test outline " + n, InterpretedType: "GTV", Algorithm: dpersonaAlgo, Color: Palette[i%len(Palette)]}
	}
	return out
}

// hardMasks adds what a tracer gets wrong: a ring with a hole, an island inside the hole,
// one-pixel islands, diagonal neighbours and a part touching two image borders, on every slice
// but the first (empty); ROI 2 is empty everywhere.
func hardMasks(s *Series) [][][]uint8 {
	out := [][][]uint8{make([][]uint8, len(s.Slices)), make([][]uint8, len(s.Slices))}
	R, C := s.Rows, s.Cols
	for i := 1; i < len(s.Slices); i++ {
		m := make([]uint8, R*C)
		set := func(r, c int) {
			if r >= 0 && r < R && c >= 0 && c < C {
				m[r*C+c] = 1
			}
		}
		cy, cx := R/2, C/2
		rad := min(R, C) / 4
		for r := 0; r < R; r++ {
			for c := 0; c < C; c++ {
				d2 := (r-cy)*(r-cy) + (c-cx)*(c-cx)
				if d2 <= rad*rad && d2 > (rad/2)*(rad/2) || d2 <= (rad/6)*(rad/6) {
					set(r, c)
				}
			}
		}
		set(1, 1)                    // one-pixel island
		set(3, 3)                    // diagonal pair
		set(4, 4)                    //
		for r := R - 3; r < R; r++ { // touches the bottom and right borders
			for c := C - 4; c < C; c++ {
				set(r, c)
			}
		}
		out[0][i] = m
	}
	return out
}

// TestRTStructValidatedByIndependentTools writes structure sets for the LIDC fixtures (the real
// readers' outlines, one ROI each) and for synthetic hard masks on every other fixture, then
// checks them with dciodvfy (zero errors), pydicom (every contour on its image's plane, in the
// right place), and plastimatch: its rasterisation of our contours on the CT grid must give
// back the traced masks (Dice >= 0.95; it is exact here).
func TestRTStructValidatedByIndependentTools(t *testing.T) {
	type rtCase struct {
		name  string
		src   *Series
		paths []string
		desc  RTStructDescription
		masks [][][]uint8
	}
	var cases []rtCase
	for _, name := range fixtureSeries {
		paths := fixturePaths(t, name)
		s, err := LoadSeries(paths)
		if err != nil {
			t.Fatal(err)
		}
		desc := RTStructDescription{Equipment: testEquipment, StructureSetLabel: "DPERSONA", SeriesDescription: "D-Persona contours (AI)"}
		if strings.HasPrefix(name, "lidc") {
			masks := lidcReaderMasks(t, name, s)
			desc.ROIs = roiDescs("GTVp_R1", "GTVp_R2", "GTVp_R3", "GTVp_R4")[:len(masks)]
			cases = append(cases, rtCase{name, s, paths, desc, masks})
			continue
		}
		desc.ROIs = roiDescs("GTVp_Hard", "GTVp_Empty")
		cases = append(cases, rtCase{name, s, paths, desc, hardMasks(s)})
	}
	dir := t.TempDir()
	plastimatch := testutil.RequireTool(t, "plastimatch")
	for _, c := range cases {
		p := filepath.Join(dir, c.name+".rtstruct.dcm")
		data, info, err := EncodeRTStruct(c.src, c.desc, c.masks)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if info.Contours == 0 {
			t.Fatalf("%s: no contours", c.name)
		}
		errs, warns := dciodvfy(t, p)
		inherited := sourceUIDErrors(t, c.paths)
		for _, e := range errs {
			if m := illegalUIDRoot.FindStringSubmatch(e); m != nil && inherited[m[1]] {
				continue
			}
			t.Errorf("%s: dciodvfy: %s", c.name, e)
		}
		for _, w := range warns {
			t.Logf("%s: dciodvfy: %s", c.name, w)
		}
		// pydicom: the contours lie on their images and match the masks' corners.
		out := python(t, "verify_rtstruct.py", p, strings.Join(c.paths, ","))
		if !strings.Contains(out, fmt.Sprintf("OK %d contours", info.Contours)) {
			t.Fatalf("%s: pydicom read-back:\n%s", c.name, out)
		}

		// plastimatch: contours back to a mask on the CT grid.
		if c.src.SOPClassUID != "1.2.840.10008.5.1.4.1.1.2" {
			continue // plastimatch rasterises onto CT grids
		}
		ctDir := filepath.Join(dir, c.name+"-ct")
		os.Mkdir(ctDir, 0o755)
		for _, f := range c.paths {
			b, _ := os.ReadFile(f)
			os.WriteFile(filepath.Join(ctDir, filepath.Base(f)), b, 0o644)
		}
		outDir := filepath.Join(dir, c.name+"-masks")
		cmd := exec.Command(plastimatch, "convert", "--input", p, "--referenced-ct", ctDir, "--xor-contours",
			"--output-prefix", outDir, "--prefix-format", "nrrd")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: plastimatch: %v\n%s", c.name, err, b)
		}
		for r, roi := range c.desc.ROIs {
			want := c.masks[r]
			empty := true
			for _, m := range want {
				empty = empty && (m == nil || allZero(m))
			}
			nrrd := filepath.Join(outDir, roi.Name+".nrrd")
			if _, err := os.Stat(nrrd); err != nil && empty {
				t.Logf("%s %s: empty ROI, plastimatch writes no mask", c.name, roi.Name)
				continue
			}
			got := readNRRDMask(t, nrrd, c.src)
			inter, sum := 0, 0
			for i := range want {
				for k := 0; k < c.src.Rows*c.src.Cols; k++ {
					w := want[i] != nil && want[i][k] != 0
					g := got[i][k] != 0
					if w && g {
						inter++
					}
					if w {
						sum++
					}
					if g {
						sum++
					}
				}
			}
			dice := 1.0
			if sum > 0 {
				dice = 2 * float64(inter) / float64(sum)
			}
			t.Logf("%s %s: plastimatch round trip Dice %.4f (%d pixels)", c.name, roi.Name, dice, sum/2)
			if dice < 0.95 {
				t.Errorf("%s %s: plastimatch round trip Dice %.4f < 0.95", c.name, roi.Name, dice)
			}
		}
	}
}

// readNRRDMask reads plastimatch's uchar NRRD (raw or gzip, x fastest) as [slice][row*cols] for
// the series' slices: plastimatch resamples onto a regular grid, so each slice takes the grid
// plane through its position, which must be within a hundredth of a millimetre.
func readNRRDMask(t *testing.T, path string, s *Series) [][]uint8 {
	t.Helper()
	out := strings.Fields(python(t, "nrrd_to_raw.py", path, path+".raw"))
	if len(out) != 15 {
		t.Fatalf("nrrd_to_raw: %q", out)
	}
	var v [15]float64
	for i, f := range out {
		v[i], _ = strconv.ParseFloat(f, 64)
	}
	nx, ny, nz := int(v[0]), int(v[1]), int(v[2])
	origin := Vec3{v[3], v[4], v[5]}
	dx, dy, dz := Vec3{v[6], v[7], v[8]}, Vec3{v[9], v[10], v[11]}, Vec3{v[12], v[13], v[14]}
	if nx != s.Cols || ny != s.Rows {
		t.Fatalf("plastimatch grid %dx%d, series %dx%d", nx, ny, s.Cols, s.Rows)
	}
	raw, err := os.ReadFile(path + ".raw")
	if err != nil {
		t.Fatal(err)
	}
	n := nx * ny
	res := make([][]uint8, len(s.Slices))
	for i, sl := range s.Slices {
		d := sl.Position.sub(origin)
		k := d.dot(dz) / dz.dot(dz)
		kk := int(math.Round(k))
		off := d.sub(Vec3{dz[0] * k, dz[1] * k, dz[2] * k})
		if math.Abs(k-float64(kk))*dz.norm() > 0.01 || kk < 0 || kk >= nz || math.Abs(off.dot(dx)) > 0.01 || math.Abs(off.dot(dy)) > 0.01 {
			t.Fatalf("slice %d at %v is not on plastimatch's grid (origin %v, plane %.3f)", i, sl.Position, origin, k)
		}
		res[i] = raw[kk*n : (kk+1)*n]
	}
	return res
}

// TestRTStructContoursInPatientCoordinates: on an oblique, gantry-tilted geometry every contour
// point lies in its slice's plane, on a pixel corner, and the ContourImageSequence names that
// slice.
func TestRTStructContoursInPatientCoordinates(t *testing.T) {
	s := loadFixture(t, "ct5n-pydicom")
	tilted := *s
	tilted.Slices = append([]Slice(nil), s.Slices...)
	c, sn := math.Cos(0.4), math.Sin(0.4)
	tilted.Orientation = [6]float64{c, 0, sn, 0, 1, 0} // rows tilted 0.4 rad out of the axial plane
	tilted.PixelSpacing = [2]float64{0.8, 0.6}
	normal := cross(Vec3{c, 0, sn}, Vec3{0, 1, 0})
	for i := range tilted.Slices {
		// Slices step along z, not along the normal: a gantry tilt.
		tilted.Slices[i].Position = Vec3{-100, -120, 40 + 2.5*float64(i)}
	}
	masks := hardMasks(&tilted)
	desc := RTStructDescription{Equipment: testEquipment, StructureSetLabel: "TILT", ROIs: roiDescs("GTVp_Tilt", "GTVp_Empty")}
	data, info, err := EncodeRTStruct(&tilted, desc, masks)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tilt.dcm")
	os.WriteFile(p, data, 0o644)
	if errs, _ := dciodvfy(t, p); len(errs) > 0 {
		t.Fatalf("dciodvfy: %v", errs)
	}
	items := contourItems(t, p)
	if len(items) != info.Contours {
		t.Fatalf("%d contour items, %d reported", len(items), info.Contours)
	}
	bySOP := map[string]int{}
	for i, sl := range tilted.Slices {
		bySOP[sl.SOPInstanceUID] = i
	}
	for _, it := range items {
		i, ok := bySOP[it.sop]
		if !ok {
			t.Fatalf("contour references unknown image %s", it.sop)
		}
		o := tilted.Slices[i].Position
		for _, pt := range it.points {
			d := pt.sub(o)
			if off := d.dot(normal); math.Abs(off) > 1e-3 {
				t.Fatalf("point %v is %.4f mm off slice %d's plane", pt, off, i)
			}
			col := d.dot(Vec3{c, 0, sn})/0.6 + 0.5
			row := d.dot(Vec3{0, 1, 0})/0.8 + 0.5
			if math.Abs(col-math.Round(col)) > 1e-2 || math.Abs(row-math.Round(row)) > 1e-2 {
				t.Fatalf("point %v is not on a pixel corner (column %.3f, row %.3f)", pt, col, row)
			}
		}
	}
}

type contourItem struct {
	sop    string
	points []Vec3
}

// contourItems reads every contour (image reference and points) with our own parser.
func contourItems(t *testing.T, path string) []contourItem {
	t.Helper()
	a, perr, err := parseFile(path)
	if err != nil || perr != nil {
		t.Fatalf("parse %s: %v %v", path, err, perr)
	}
	var out []contourItem
	for _, roi := range a.items(tag.ROIContourSequence) {
		for _, c := range roi.items(tag.ContourSequence) {
			img, ok := c.item(tag.ContourImageSequence)
			if !ok {
				t.Fatal("contour without ContourImageSequence")
			}
			vals := c.strings(tag.ContourData)
			if len(vals)%3 != 0 {
				t.Fatalf("ContourData has %d values", len(vals))
			}
			n, _ := strconv.Atoi(c.str(tag.NumberOfContourPoints))
			if n != len(vals)/3 {
				t.Fatalf("NumberOfContourPoints %d for %d points", n, len(vals)/3)
			}
			it := contourItem{sop: img.str(tagRefSOPInstanceUID)}
			for k := 0; k < len(vals); k += 3 {
				var v Vec3
				for j := 0; j < 3; j++ {
					v[j], _ = strconv.ParseFloat(strings.TrimSpace(vals[k+j]), 64)
				}
				it.points = append(it.points, v)
			}
			out = append(out, it)
		}
	}
	return out
}

func TestRTStructRejectsBadDescriptions(t *testing.T) {
	s := loadFixture(t, "ct5n-pydicom")
	masks := hardMasks(s)
	good := RTStructDescription{Equipment: testEquipment, StructureSetLabel: "DPERSONA", ROIs: roiDescs("GTVp_R1", "GTVp_R2")}
	if _, _, err := EncodeRTStruct(s, good, masks); err != nil {
		t.Fatalf("good description rejected: %v", err)
	}
	cases := map[string]struct {
		f    func(d *RTStructDescription)
		attr string
	}{
		"ROI name with a space":    {func(d *RTStructDescription) { d.ROIs[0].Name = "GTV R1" }, "ROI 1 ROIName (3006,0026)"},
		"ROI name too long":        {func(d *RTStructDescription) { d.ROIs[0].Name = "GTVp_Consensus_Long" }, "ROI 1 ROIName (3006,0026)"},
		"duplicate ROI name":       {func(d *RTStructDescription) { d.ROIs[1].Name = "GTVp_R1" }, "ROI 2 ROIName (3006,0026)"},
		"unknown interpreted type": {func(d *RTStructDescription) { d.ROIs[0].InterpretedType = "TUMOUR" }, "RTROIInterpretedType (3006,00A4)"},
		"no generation algorithm":  {func(d *RTStructDescription) { d.ROIs[0].Algorithm.Type = "" }, "ROIGenerationAlgorithm (3006,0036)"},
		"no algorithm version":     {func(d *RTStructDescription) { d.ROIs[0].Algorithm.Version = "" }, "ROIGenerationDescription (3006,0038)"},
		"no structure set label":   {func(d *RTStructDescription) { d.StructureSetLabel = "" }, "StructureSetLabel (3006,0002)"},
		"label too long":           {func(d *RTStructDescription) { d.StructureSetLabel = "DPERSONA_CONTOURS" }, "StructureSetLabel (3006,0002)"},
		"no device serial number":  {func(d *RTStructDescription) { d.Equipment.DeviceSerialNumber = "" }, "DeviceSerialNumber (0018,1000)"},
		"invalid predecessor UID":  {func(d *RTStructDescription) { d.Predecessor = "1.02" }, "PredecessorStructureSetSequence"},
		"no ROIs":                  {func(d *RTStructDescription) { d.ROIs = nil }, "StructureSetROISequence"},
		"more ROIs than mask sets": {func(d *RTStructDescription) { d.ROIs = roiDescs("A", "B", "C") }, "masks"},
	}
	for name, c := range cases {
		d := good
		d.ROIs = append([]ROIDescription(nil), good.ROIs...)
		c.f(&d)
		_, _, err := EncodeRTStruct(s, d, masks)
		if !errors.Is(err, ErrInvalidRTStruct) || !strings.Contains(err.Error(), c.attr) {
			t.Errorf("%s: want ErrInvalidRTStruct naming %s, got %v", name, c.attr, err)
		}
	}
}

// TestOwnRTStructIsNotAPrompt: the gateway's own structure set, if a PACS sends it back, gives no
// lesion prompt (it would otherwise segment its own output again), while the same contours
// from another manufacturer are prompts.
func TestOwnRTStructIsNotAPrompt(t *testing.T) {
	s := loadFixture(t, "lidc-ct-0005")
	masks := lidcReaderMasks(t, "lidc-ct-0005", s)[:1]
	for _, c := range []struct {
		manufacturer string
		prompts      bool
	}{{Manufacturer, false}, {"Treatment Planning Inc", true}} {
		eq := testEquipment
		eq.Manufacturer = c.manufacturer
		data, _, err := EncodeRTStruct(s, RTStructDescription{Equipment: eq, StructureSetLabel: "DPERSONA", ROIs: roiDescs("GTVp_R1")}, masks)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "rt.dcm")
		os.WriteFile(p, data, 0o644)
		obj, err := ReadPrompts(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(obj.Prompts) > 0; got != c.prompts {
			t.Errorf("manufacturer %q: %d prompts, issues %v", c.manufacturer, len(obj.Prompts), obj.Issues)
		}
		if !c.prompts && (len(obj.Issues) != 1 || !errors.Is(obj.Issues[0].Err, ErrPromptUnsupported)) {
			t.Errorf("own structure set: issues %v, want one naming it as the gateway's output", obj.Issues)
		}
	}
}
