package dicomio

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
)

// attrs gives typed access to the elements of one dataset level (top level or one sequence item).
type attrs struct {
	elems    []*dicom.Element
	instance string // for error messages
}

func tagName(t tag.Tag) string {
	if info, err := tag.Find(t); err == nil {
		return fmt.Sprintf("%s (%04X,%04X)", info.Keyword, t.Group, t.Element)
	}
	return fmt.Sprintf("(%04X,%04X)", t.Group, t.Element)
}

func (a attrs) find(t tag.Tag) *dicom.Element {
	for _, e := range a.elems {
		if e.Tag == t {
			return e
		}
	}
	return nil
}

func (a attrs) has(t tag.Tag) bool { return a.find(t) != nil }

// strings returns the string values of t, or nil when absent or not a string element.
func (a attrs) strings(t tag.Tag) []string {
	e := a.find(t)
	if e == nil || e.Value == nil {
		return nil
	}
	v, ok := e.Value.GetValue().([]string)
	if !ok {
		return nil
	}
	return v
}

// str returns the first string value trimmed of DICOM padding, or "".
func (a attrs) str(t tag.Tag) string {
	v := a.strings(t)
	if len(v) == 0 {
		return ""
	}
	return strings.TrimRight(strings.TrimSpace(v[0]), "\x00")
}

// ints returns integer values (US, SS, UL, SL, and IS parsed from its string form).
func (a attrs) ints(t tag.Tag) ([]int, error) {
	e := a.find(t)
	if e == nil || e.Value == nil {
		return nil, nil
	}
	switch v := e.Value.GetValue().(type) {
	case []int:
		return v, nil
	case []string:
		out := make([]int, 0, len(v))
		for _, s := range v {
			s = strings.TrimSpace(strings.TrimRight(s, "\x00"))
			if s == "" {
				continue
			}
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, newErr(ErrMissingAttribute, a.instance, tagName(t), "not an integer: %q", s)
			}
			out = append(out, n)
		}
		return out, nil
	}
	return nil, newErr(ErrMissingAttribute, a.instance, tagName(t), "unexpected value type")
}

// requireInt returns the single integer value of a required attribute.
func (a attrs) requireInt(t tag.Tag) (int, error) {
	v, err := a.ints(t)
	if err != nil {
		return 0, err
	}
	if len(v) == 0 {
		return 0, newErr(ErrMissingAttribute, a.instance, tagName(t), "absent or empty")
	}
	return v[0], nil
}

// floats returns decimal values (DS parsed from strings, FL/FD as is).
func (a attrs) floats(t tag.Tag) ([]float64, error) {
	e := a.find(t)
	if e == nil || e.Value == nil {
		return nil, nil
	}
	switch v := e.Value.GetValue().(type) {
	case []float64:
		return v, nil
	case []string:
		out := make([]float64, 0, len(v))
		for _, s := range v {
			s = strings.TrimSpace(strings.TrimRight(s, "\x00"))
			if s == "" {
				continue
			}
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, newErr(ErrGeometry, a.instance, tagName(t), "not a decimal number: %q", s)
			}
			out = append(out, f)
		}
		return out, nil
	}
	return nil, newErr(ErrMissingAttribute, a.instance, tagName(t), "unexpected value type")
}

// items returns the items of a sequence as attrs, or nil.
func (a attrs) items(t tag.Tag) []attrs {
	e := a.find(t)
	if e == nil || e.Value == nil {
		return nil
	}
	seq, ok := e.Value.GetValue().([]*dicom.SequenceItemValue)
	if !ok {
		return nil
	}
	out := make([]attrs, 0, len(seq))
	for _, it := range seq {
		els, _ := it.GetValue().([]*dicom.Element)
		out = append(out, attrs{elems: els, instance: a.instance})
	}
	return out
}

// item returns the first item of a sequence, if any.
func (a attrs) item(t tag.Tag) (attrs, bool) {
	it := a.items(t)
	if len(it) == 0 {
		return attrs{}, false
	}
	return it[0], true
}
