package dimse

import "fmt"

// Status is the Status (0000,0900) of a DIMSE response. Its meaning comes from one table
// (statusTable, PS3.7 annex C and the C-STORE statuses of PS3.4 B.2.3) and, for codes not in it,
// from the ranges PS3.7 C.1 assigns to each category; Category, Text and Transient read it.
//
// Status deliberately has no String method: fmt would then print it as text under %x/%X, and the
// code "0x%04X" is what logs, ErrorComment-bearing errors and delivery records show. Use Text.
type Status uint16

// Category is the class of a status (PS3.7 C.1): what the requestor does next depends on it.
type Category uint8

// Status categories.
const (
	CategorySuccess Category = iota + 1 // the operation was performed
	CategoryWarning                     // performed, with a caveat (C-STORE: the instance is stored)
	CategoryFailure                     // not performed
	CategoryCancel                      // ended by a C-CANCEL
	CategoryPending                     // more responses follow
)

func (c Category) String() string {
	switch c {
	case CategorySuccess:
		return "success"
	case CategoryWarning:
		return "warning"
	case CategoryFailure:
		return "failure"
	case CategoryCancel:
		return "cancel"
	case CategoryPending:
		return "pending"
	}
	return fmt.Sprintf("category %d", uint8(c))
}

// Statuses this gateway sends or acts on.
const (
	StatusSuccess Status = 0x0000

	// Failures (PS3.7 C.4 general statuses; PS3.4 B.2.3 C-STORE).
	StatusProcessingFailure        Status = 0x0110
	StatusSOPClassNotSupported     Status = 0x0122
	StatusNotAuthorized            Status = 0x0124
	StatusUnrecognizedOperation    Status = 0x0211
	StatusResourceLimitation       Status = 0x0213
	StatusOutOfResources           Status = 0xA700 // C-STORE: any 0xA7xx; this gateway: the disk is (nearly) full
	StatusOutOfResourcesLocal      Status = 0xA701 // this gateway: another local resource failed (I/O error, fsync)
	StatusDataSetDoesNotMatchClass Status = 0xA900
	StatusCannotUnderstand         Status = 0xC000

	// Warnings (PS3.4 B.2.3).
	StatusCoercionOfDataElements  Status = 0xB000
	StatusElementsDiscarded       Status = 0xB006
	StatusDataSetDoesNotMatchWarn Status = 0xB007

	StatusCancel  Status = 0xFE00
	StatusPending Status = 0xFF00
)

// statusInfo is what the table says about one code or one range of codes.
type statusInfo struct {
	category Category
	text     string
	// transient: a failure that may not recur if the same request is sent again later (the peer
	// ran out of something), as opposed to one about the request itself. PS3.7 does not define
	// this; it decides whether an exporter retries.
	transient bool
}

// statusTable holds the codes with a meaning of their own.
var statusTable = map[Status]statusInfo{
	StatusSuccess:                 {CategorySuccess, "success", false},
	0x0001:                        {CategoryWarning, "warning: requested optional attributes are not supported", false},
	0x0107:                        {CategoryWarning, "warning: attribute list error", false},
	0x0116:                        {CategoryWarning, "warning: attribute value out of range", false},
	StatusCoercionOfDataElements:  {CategoryWarning, "warning: coercion of data elements", false},
	StatusElementsDiscarded:       {CategoryWarning, "warning: elements discarded", false},
	StatusDataSetDoesNotMatchWarn: {CategoryWarning, "warning: data set does not match SOP class", false},
	StatusProcessingFailure:       {CategoryFailure, "processing failure", true},
	0x0105:                        {CategoryFailure, "no such attribute", false},
	0x0106:                        {CategoryFailure, "invalid attribute value", false},
	0x0111:                        {CategoryFailure, "SOP instance already exists", false},
	0x0112:                        {CategoryFailure, "no such SOP instance", false},
	0x0117:                        {CategoryFailure, "invalid object instance", false},
	0x0118:                        {CategoryFailure, "no such SOP class", false},
	0x0119:                        {CategoryFailure, "class-instance conflict", false},
	0x0120:                        {CategoryFailure, "missing attribute", false},
	0x0121:                        {CategoryFailure, "missing attribute value", false},
	StatusSOPClassNotSupported:    {CategoryFailure, "refused: SOP class not supported", false},
	StatusNotAuthorized:           {CategoryFailure, "refused: not authorized", false},
	0x0210:                        {CategoryFailure, "duplicate invocation", false},
	StatusUnrecognizedOperation:   {CategoryFailure, "unrecognized operation", false},
	0x0212:                        {CategoryFailure, "mistyped argument", false},
	StatusResourceLimitation:      {CategoryFailure, "resource limitation", true},
	StatusCancel:                  {CategoryCancel, "cancelled", false},
	StatusPending:                 {CategoryPending, "pending", false},
	0xFF01:                        {CategoryPending, "pending: optional keys not supported", false},
}

// info returns the table entry for s, or the meaning of its range.
func (s Status) info() statusInfo {
	if in, ok := statusTable[s]; ok {
		return in
	}
	switch {
	case s&0xFF00 == 0xA700:
		return statusInfo{CategoryFailure, "refused: out of resources", true}
	case s&0xFF00 == 0xA900:
		return statusInfo{CategoryFailure, "error: data set does not match SOP class", false}
	case s&0xF000 == 0xC000:
		return statusInfo{CategoryFailure, "error: cannot understand", false}
	case s&0xF000 == 0xB000:
		return statusInfo{CategoryWarning, "warning", false}
	}
	// PS3.7 C.1: every code that is not success, warning, pending or cancel is a failure.
	return statusInfo{CategoryFailure, fmt.Sprintf("status 0x%04x", uint16(s)), false}
}

// Category returns the class of the status.
func (s Status) Category() Category { return s.info().category }

// Text is a short description for logs and tools ("refused: out of resources").
func (s Status) Text() string { return s.info().text }

// Transient reports whether the status is a failure that may pass when the same request is
// retried later: out of resources (0xA7xx), processing failure (0x0110) and resource limitation
// (0x0213). Failures about the request itself (0xA9xx data set does not match, 0xCxxx cannot
// understand, 0x0111 the instance already exists, 0x0122 SOP class not supported, 0x0124 not
// authorized, ...) are not. The C-STORE and the STOW-RS exporters both retry by it.
func (s Status) Transient() bool {
	in := s.info()
	return in.category == CategoryFailure && in.transient
}

// IsSuccessOrWarning reports whether the operation was performed (for C-STORE: the instance is
// stored).
func (s Status) IsSuccessOrWarning() bool {
	c := s.Category()
	return c == CategorySuccess || c == CategoryWarning
}
