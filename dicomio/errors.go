package dicomio

import (
	"errors"
	"fmt"
)

// Error kinds. Every error returned by LoadSeries, ReadSEG and WriteSEG for bad input is an
// *Error whose Kind is one of these, so callers can branch with errors.Is(err, dicomio.ErrGeometry).
var (
	ErrNotDICOM               = errors.New("not a readable DICOM file")
	ErrMissingAttribute       = errors.New("required attribute missing")
	ErrCompressed             = errors.New("compressed pixel data cannot be decoded")
	ErrUnsupportedPixelFormat = errors.New("unsupported pixel format")
	ErrTruncatedPixelData     = errors.New("truncated pixel data")
	ErrGeometry               = errors.New("inconsistent geometry")
	ErrMixedSeries            = errors.New("instances of more than one series")
	ErrTooFewSlices           = errors.New("too few slices")
	ErrIrregularSpacing       = errors.New("irregular slice spacing")
	ErrInvalidSpec            = errors.New("invalid input specification")
	ErrInvalidSEG             = errors.New("invalid segmentation description or masks")
	ErrInvalidRTStruct        = errors.New("invalid RT structure set description or masks")
	ErrInvalidKOS             = errors.New("invalid key object selection description")
)

// Error names the offending instance (file path and/or SOP Instance UID) and attribute.
type Error struct {
	Kind      error  // one of the Err* sentinels above
	Instance  string // file path or SOP Instance UID; empty when the error concerns the whole series
	Attribute string // attribute keyword with its tag, e.g. "ImagePositionPatient (0020,0032)"
	Detail    string
}

func (e *Error) Error() string {
	s := e.Kind.Error()
	if e.Instance != "" {
		s += ": instance " + e.Instance
	}
	if e.Attribute != "" {
		s += ": " + e.Attribute
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap lets errors.Is match the Kind sentinel.
func (e *Error) Unwrap() error { return e.Kind }

func newErr(kind error, instance, attribute, format string, args ...any) *Error {
	return &Error{Kind: kind, Instance: instance, Attribute: attribute, Detail: fmt.Sprintf(format, args...)}
}
