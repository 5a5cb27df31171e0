package dicomio

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// Lesion is a prompt placed in a series: the slice and pixel its marking is centred on.
type Lesion struct {
	Prompt
	// Slice indexes Series.Slices (ascending location along the normal); Row and Column are the
	// pixel the marking is centred on.
	Slice       int
	Row, Column int
	// Center is that point in patient coordinates (mm).
	Center Vec3
	// RadiusMM is how far the marking reaches from its centre (half a measured length, a
	// circle's radius, the farthest vertex of an outline); 0 for a point.
	RadiusMM float64
	// Merged names the other prompts that marked the same lesion (each also has a PromptIssue
	// of kind ErrPromptOverlap).
	Merged []string
}

// SameLesionMM is the least distance between two prompts' centres at which they count as two
// lesions. Two markings closer than this, or one centred inside the other's extent, are one.
const SameLesionMM = 5.0

// PixelPrompt is a prompt on pixel (row, column) of an image (frame 0 for a single-frame
// image), as an API caller or the command line gives it.
func PixelPrompt(sopInstanceUID string, frame, row, column int) Prompt {
	return Prompt{Source: SourceAPI, Shape: "POINT", RefSOPInstanceUID: sopInstanceUID, RefFrame: frame,
		ImagePoints: [][2]float64{{float64(column) + 0.5, float64(row) + 0.5}},
		Item:        fmt.Sprintf("point (row %d, column %d) on %s", row, column, sopInstanceUID)}
}

// PatientPrompt is a prompt at a point in patient coordinates (mm) of a frame of reference
// (empty = the series' own).
func PatientPrompt(frameOfReferenceUID string, p Vec3) Prompt {
	return Prompt{Source: SourceAPI, Shape: "POINT", FrameOfReferenceUID: frameOfReferenceUID, PatientPoints: []Vec3{p},
		Item: fmt.Sprintf("point (%.1f, %.1f, %.1f) mm", p[0], p[1], p[2])}
}

// ResolvePromptObject places every prompt of obj in s. A prompt object from another study gives
// an issue per prompt; otherwise see ResolvePrompts.
func (s *Series) ResolvePromptObject(obj *PromptObject) ([]Lesion, []PromptIssue) {
	if obj.StudyInstanceUID != "" && obj.StudyInstanceUID != s.StudyInstanceUID {
		var issues []PromptIssue
		for _, p := range obj.Prompts {
			issues = append(issues, issueFor(p, ErrPromptStudy, tagName(tag.StudyInstanceUID),
				"the %s belongs to study %s, the series to study %s", obj.Source, obj.StudyInstanceUID, s.StudyInstanceUID))
		}
		return nil, issues
	}
	return s.ResolvePrompts(obj.Prompts)
}

// ResolvePrompts places prompts in s: each becomes a Lesion or a PromptIssue that says why not
// (another image, another frame of reference, outside the volume, the same lesion as an earlier
// prompt). Prompts are taken in order; a later prompt on the same lesion is merged into the
// first one.
func (s *Series) ResolvePrompts(prompts []Prompt) ([]Lesion, []PromptIssue) {
	var lesions []Lesion
	var issues []PromptIssue
	for _, p := range prompts {
		l, issue := s.resolve(p)
		if issue != nil {
			issues = append(issues, *issue)
			continue
		}
		merged := false
		for i := range lesions {
			k := &lesions[i]
			d := l.Center.sub(k.Center).norm()
			if d < math.Max(SameLesionMM, math.Max(k.RadiusMM, l.RadiusMM)) {
				k.Merged = append(k.Merged, p.Name())
				issues = append(issues, issueFor(p, ErrPromptOverlap, "",
					"marks the same lesion as %s (centres %.1f mm apart); merged into it", k.Name(), d))
				merged = true
				break
			}
		}
		if !merged {
			lesions = append(lesions, l)
		}
	}
	return lesions, issues
}

func (s *Series) rowDir() Vec3 { return Vec3{s.Orientation[0], s.Orientation[1], s.Orientation[2]} }
func (s *Series) colDir() Vec3 { return Vec3{s.Orientation[3], s.Orientation[4], s.Orientation[5]} }

// PixelToPatient is the patient position (mm) of continuous image point (x, y) = (column, row)
// on slice i, in PS3.3 C.18.6.1.2 image space ((0.5, 0.5) is the centre of the first pixel,
// which is where ImagePositionPatient lies).
func (s *Series) PixelToPatient(i int, x, y float64) Vec3 {
	o := s.Slices[i].Position
	r, c := s.rowDir(), s.colDir()
	dx, dy := (x-0.5)*s.PixelSpacing[1], (y-0.5)*s.PixelSpacing[0]
	return Vec3{o[0] + dx*r[0] + dy*c[0], o[1] + dx*r[1] + dy*c[1], o[2] + dx*r[2] + dy*c[2]}
}

func (s *Series) resolve(p Prompt) (Lesion, *PromptIssue) {
	fail := func(kind error, attribute, format string, args ...any) (Lesion, *PromptIssue) {
		is := issueFor(p, kind, attribute, format, args...)
		return Lesion{}, &is
	}
	l := Lesion{Prompt: p}
	if p.Patient() {
		forUID := p.FrameOfReferenceUID
		if forUID == "" {
			forUID = s.FrameOfReferenceUID
		}
		if forUID != s.FrameOfReferenceUID {
			return fail(ErrPromptFrameOfRef, tagName(tag.FrameOfReferenceUID),
				"patient coordinates in frame of reference %s; the series is in %s, and no registration relates them", forUID, s.FrameOfReferenceUID)
		}
		c, radius := centre3(p.PatientPoints)
		n := s.Normal
		loc := c.dot(n)
		best, bestD := -1, math.Inf(1)
		for i, sl := range s.Slices {
			if d := math.Abs(sl.Location - loc); d < bestD {
				best, bestD = i, d
			}
		}
		tol := math.Max(math.Max(s.SliceSpacing, s.SliceThickness), 1) / 2
		if bestD > tol+1e-3 {
			return fail(ErrPromptOutside, "", "the point (%.1f, %.1f, %.1f) mm is %.1f mm from the nearest slice (%s); the series spans %.1f to %.1f mm along its normal",
				c[0], c[1], c[2], bestD, sliceName(s.Slices[best]), s.Slices[0].Location, s.Slices[len(s.Slices)-1].Location)
		}
		off := c.sub(s.Slices[best].Position)
		col := off.dot(s.rowDir())/s.PixelSpacing[1] + 0.5
		row := off.dot(s.colDir())/s.PixelSpacing[0] + 0.5
		if col < 0 || row < 0 || col >= float64(s.Cols) || row >= float64(s.Rows) {
			return fail(ErrPromptOutside, "", "the point (%.1f, %.1f, %.1f) mm falls at column %.1f, row %.1f of slice %s, outside its %d x %d pixels",
				c[0], c[1], c[2], col, row, sliceName(s.Slices[best]), s.Cols, s.Rows)
		}
		l.Slice, l.Column, l.Row = best, int(col), int(row)
		l.Center, l.RadiusMM = c, radius
		return l, nil
	}
	if p.RefSOPInstanceUID == "" || len(p.ImagePoints) == 0 {
		return fail(ErrPromptNoCoords, "", "neither image coordinates nor patient coordinates")
	}
	idx := -1
	for i, sl := range s.Slices {
		if sl.SOPInstanceUID != p.RefSOPInstanceUID {
			continue
		}
		if sl.FrameNumber == p.RefFrame || (p.RefFrame <= 1 && sl.FrameNumber <= 1) {
			idx = i
			break
		}
	}
	if idx < 0 {
		where := fmt.Sprintf("image %s", p.RefSOPInstanceUID)
		if p.RefFrame > 0 {
			where += fmt.Sprintf(" frame %d", p.RefFrame)
		}
		return fail(ErrPromptReference, tagName(tag.ReferencedSOPInstanceUID), "%s is not in series %s of study %s (%d slices)",
			where, s.SeriesInstanceUID, s.StudyInstanceUID, len(s.Slices))
	}
	x, y, radiusPx := centre2(p.Shape, p.ImagePoints)
	if x < 0 || y < 0 || x >= float64(s.Cols) || y >= float64(s.Rows) {
		return fail(ErrPromptOutside, tagName(tag.GraphicData), "the %s is centred at column %.1f, row %.1f, outside the %d x %d image %s",
			p.Shape, x, y, s.Cols, s.Rows, sliceName(s.Slices[idx]))
	}
	l.Slice, l.Column, l.Row = idx, int(x), int(y)
	l.Center = s.PixelToPatient(idx, x, y)
	l.RadiusMM = radiusPx * math.Min(s.PixelSpacing[0], s.PixelSpacing[1])
	return l, nil
}

// centre2 gives the centre of a 2D graphic and its extent (pixels): a circle's centre and
// radius; otherwise the mean of the distinct vertices (an outline's closing vertex counts once)
// and the farthest vertex.
func centre2(shape string, pts [][2]float64) (x, y, radius float64) {
	if shape == "CIRCLE" && len(pts) == 2 {
		return pts[0][0], pts[0][1], math.Hypot(pts[1][0]-pts[0][0], pts[1][1]-pts[0][1])
	}
	if len(pts) > 2 && pts[0] == pts[len(pts)-1] {
		pts = pts[:len(pts)-1]
	}
	for _, p := range pts {
		x += p[0]
		y += p[1]
	}
	x /= float64(len(pts))
	y /= float64(len(pts))
	for _, p := range pts {
		radius = math.Max(radius, math.Hypot(p[0]-x, p[1]-y))
	}
	return x, y, radius
}

// centre3 is centre2 for patient points.
func centre3(pts []Vec3) (Vec3, float64) {
	if len(pts) > 2 && pts[0] == pts[len(pts)-1] {
		pts = pts[:len(pts)-1]
	}
	var c Vec3
	for _, p := range pts {
		for k := range c {
			c[k] += p[k] / float64(len(pts))
		}
	}
	radius := 0.0
	for _, p := range pts {
		radius = math.Max(radius, p.sub(c).norm())
	}
	return c, radius
}

// ParsePixelPrompt reads a prompt written as "SOP_INSTANCE_UID:ROW,COLUMN" (a frame of a
// multi-frame image as "SOP_INSTANCE_UID/FRAME:ROW,COLUMN"), rows and columns counted from 0 at
// the top-left pixel, as the command line takes it.
func ParsePixelPrompt(s string) (Prompt, error) {
	bad := func(format string, args ...any) (Prompt, error) {
		return Prompt{}, newErr(ErrInvalidSpec, "", "lesion", "%q: "+format, append([]any{s}, args...)...)
	}
	uid, rc, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || uid == "" {
		return bad("want SOP_INSTANCE_UID:ROW,COLUMN")
	}
	frame := 0
	if u, f, ok := strings.Cut(uid, "/"); ok {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return bad("frame %q is not a number from 1", f)
		}
		uid, frame = u, n
	}
	for _, c := range uid {
		if (c < '0' || c > '9') && c != '.' {
			return bad("%q is not a UID (digits and dots)", uid)
		}
	}
	r, c, ok := strings.Cut(rc, ",")
	row, err1 := strconv.Atoi(strings.TrimSpace(r))
	col, err2 := strconv.Atoi(strings.TrimSpace(c))
	if !ok || err1 != nil || err2 != nil || row < 0 || col < 0 {
		return bad("want ROW,COLUMN as two non-negative integers after the colon")
	}
	p := PixelPrompt(uid, frame, row, col)
	p.Item = "--lesion " + s
	return p, nil
}
