package dimse

import (
	"fmt"
	"testing"
)

func TestStatusCategoriesTextsAndTransience(t *testing.T) {
	for _, c := range []struct {
		s         Status
		cat       Category
		text      string
		transient bool
	}{
		{StatusSuccess, CategorySuccess, "success", false},
		{0x0001, CategoryWarning, "warning: requested optional attributes are not supported", false},
		{StatusCoercionOfDataElements, CategoryWarning, "warning: coercion of data elements", false},
		{StatusElementsDiscarded, CategoryWarning, "warning: elements discarded", false},
		{StatusDataSetDoesNotMatchWarn, CategoryWarning, "warning: data set does not match SOP class", false},
		{0xB123, CategoryWarning, "warning", false}, // an unlisted code of the warning range
		{StatusProcessingFailure, CategoryFailure, "processing failure", true},
		{StatusSOPClassNotSupported, CategoryFailure, "refused: SOP class not supported", false},
		{StatusNotAuthorized, CategoryFailure, "refused: not authorized", false},
		{StatusUnrecognizedOperation, CategoryFailure, "unrecognized operation", false},
		{StatusResourceLimitation, CategoryFailure, "resource limitation", true},
		{0x0111, CategoryFailure, "SOP instance already exists", false},
		{StatusOutOfResources, CategoryFailure, "refused: out of resources", true},
		{StatusOutOfResourcesLocal, CategoryFailure, "refused: out of resources", true},
		{0xA7FF, CategoryFailure, "refused: out of resources", true},
		{StatusDataSetDoesNotMatchClass, CategoryFailure, "error: data set does not match SOP class", false},
		{0xA9AB, CategoryFailure, "error: data set does not match SOP class", false},
		{StatusCannotUnderstand, CategoryFailure, "error: cannot understand", false},
		{0xCFFF, CategoryFailure, "error: cannot understand", false},
		{StatusCancel, CategoryCancel, "cancelled", false},
		{StatusPending, CategoryPending, "pending", false},
		{0xFF01, CategoryPending, "pending: optional keys not supported", false},
		{0x1234, CategoryFailure, "status 0x1234", false}, // PS3.7 C.1: anything else fails
		{0xA800, CategoryFailure, "status 0xa800", false},
	} {
		if got := c.s.Category(); got != c.cat {
			t.Errorf("0x%04X: category %v, want %v", c.s, got, c.cat)
		}
		if got := c.s.Text(); got != c.text {
			t.Errorf("0x%04X: text %q, want %q", c.s, got, c.text)
		}
		if got := c.s.Transient(); got != c.transient {
			t.Errorf("0x%04X: transient %v, want %v", c.s, got, c.transient)
		}
		ok := c.cat == CategorySuccess || c.cat == CategoryWarning
		if got := c.s.IsSuccessOrWarning(); got != ok {
			t.Errorf("0x%04X: IsSuccessOrWarning %v, want %v", c.s, got, ok)
		}
	}
}

// Every code in the table must agree with the category PS3.7 C.1 gives its range, so the table
// can only name codes, never move them to another category.
func TestStatusTableAgreesWithRanges(t *testing.T) {
	for s, in := range statusTable {
		var want Category
		switch {
		case s == 0x0000:
			want = CategorySuccess
		case s == 0x0001 || s == 0x0107 || s == 0x0116 || s&0xF000 == 0xB000:
			want = CategoryWarning
		case s == 0xFE00:
			want = CategoryCancel
		case s == 0xFF00 || s == 0xFF01:
			want = CategoryPending
		default:
			want = CategoryFailure
		}
		if in.category != want {
			t.Errorf("0x%04X is listed as %v, its range is %v", s, in.category, want)
		}
		if in.transient && in.category != CategoryFailure {
			t.Errorf("0x%04X: only a failure can be transient", s)
		}
	}
}

// The code, not a text, is what "%04X" prints: Status must not grow a String method.
func TestStatusFormatsAsItsCode(t *testing.T) {
	if got := fmt.Sprintf("0x%04X", StatusOutOfResources); got != "0xA700" {
		t.Fatalf("formatted as %q", got)
	}
	if got := CategoryPending.String(); got != "pending" {
		t.Fatalf("category text %q", got)
	}
}
