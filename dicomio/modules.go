package dicomio

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/suyashkumar/dicom/pkg/tag"

	"dpersona/internal/dicomstd"
)

// Module builders shared by every object this package writes (SEG, RTSTRUCT, Key Object
// Selection). Each builder takes a validated description and returns the elements of one module
// of PS3.3; the object encoders put the modules together.

// Code is a coded concept (code sequence item). JSON names match the model manifest.
type Code struct {
	Scheme  string `json:"scheme"`  // CodingSchemeDesignator, e.g. SCT or DCM
	Code    string `json:"code"`    // CodeValue (at most 16 characters)
	Meaning string `json:"meaning"` // CodeMeaning
}

// Lung is SCT 39607008 "Lung", the anatomic region of a chest CT finding.
var Lung = Code{Scheme: "SCT", Code: "39607008", Meaning: "Lung"}

// codeItem is one item of a code sequence (Code Sequence Macro, PS3.3 Table 8.8-1).
func codeItem(c Code) []element {
	return []element{attr(tag.CodeValue, c.Code), attr(tag.CodingSchemeDesignator, c.Scheme), attr(tag.CodeMeaning, c.Meaning)}
}

// Manufacturer is the Manufacturer (0008,0070) of every object the gateway writes; a prompt
// reader uses it to tell the gateway's own output from a person's marks.
const Manufacturer = "dpersona"

// Equipment is the General Equipment and Enhanced General Equipment modules: the software that
// made the object. Enhanced General Equipment makes every field Type 1, so all are required, and a
// placeholder such as "0" tells a reader nothing: DeviceSerialNumber names this installation.
type Equipment struct {
	Manufacturer          string // (0008,0070)
	ManufacturerModelName string // (0008,1090)
	DeviceSerialNumber    string // (0018,1000)
	SoftwareVersions      string // (0018,1020)
}

func (e Equipment) validate(kind error) error {
	for _, f := range []struct{ name, v string }{
		{"Manufacturer (0008,0070)", e.Manufacturer}, {"ManufacturerModelName (0008,1090)", e.ManufacturerModelName},
		{"DeviceSerialNumber (0018,1000)", e.DeviceSerialNumber}, {"SoftwareVersions (0018,1020)", e.SoftwareVersions},
	} {
		if err := checkLOKind(kind, f.v, f.name, true); err != nil {
			return err
		}
	}
	return nil
}

func (e Equipment) module() []element {
	return []element{
		attr(tag.Manufacturer, e.Manufacturer),
		attr(tag.ManufacturerModelName, e.ManufacturerModelName),
		attr(tag.DeviceSerialNumber, e.DeviceSerialNumber),
		attr(tag.SoftwareVersions, e.SoftwareVersions),
	}
}

// seriesModule is the General Series module of a derived series.
func seriesModule(modality, seriesUID string, number int, description string, now time.Time) []element {
	out := []element{
		attr(tag.Modality, modality),
		attr(tag.SeriesInstanceUID, seriesUID),
		attr(tag.SeriesNumber, strconv.Itoa(number)),
		attr(tag.SeriesDate, dicomDate(now)),
		attr(tag.SeriesTime, dicomTime(now)),
	}
	if description != "" {
		out = append(out, attr(tag.SeriesDescription, description))
	}
	return out
}

// frameOfReferenceModule states the source's frame of reference (PositionReferenceIndicator is
// Type 2 and unknown to a derived object).
func frameOfReferenceModule(src *Series) []element {
	return []element{attr(tag.FrameOfReferenceUID, src.FrameOfReferenceUID), attr(tag.PositionReferenceIndicator)}
}

// sopCommonModule names the object and when it was made.
func sopCommonModule(class, instance string, now time.Time) []element {
	return []element{
		attr(tag.SOPClassUID, class),
		attr(tag.SOPInstanceUID, instance),
		attr(tag.InstanceCreationDate, dicomDate(now)),
		attr(tag.InstanceCreationTime, dicomTime(now)),
	}
}

// withCharacterSet adds SpecificCharacterSet ISO_IR 192 when any value of the dataset is not
// ASCII (our values are Go strings, i.e. UTF-8; copied patient names may be too).
func withCharacterSet(ds []element) []element {
	for _, e := range ds {
		if !elementASCII(e) {
			return append(ds, attr(tag.SpecificCharacterSet, "ISO_IR 192"))
		}
	}
	return ds
}

func elementASCII(e element) bool {
	for _, s := range e.str {
		if !isASCII(s) {
			return false
		}
	}
	for _, it := range e.items {
		for _, c := range it {
			if !elementASCII(c) {
				return false
			}
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func dicomDate(t time.Time) string { return t.Format("20060102") }
func dicomTime(t time.Time) string { return t.Format("150405.000000") }

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// checkCS enforces the CS character repertoire (upper-case letters, digits, space, underscore)
// and 16 characters.
func checkCS(v, name string) error { return checkCSKind(ErrInvalidSEG, v, name) }

func checkCSKind(kind error, v, name string) error {
	if len(v) > 16 {
		return newErr(kind, "", name, "%q is longer than 16 characters", v)
	}
	for _, r := range v {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == ' ' || r == '_') {
			return newErr(kind, "", name, "%q: only A-Z, 0-9, space and _ are allowed in a code string", v)
		}
	}
	return nil
}

// checkLO enforces LO: at most 64 characters, no backslash or control characters.
func checkLO(v, name string, required bool) error {
	return checkLOKind(ErrInvalidSEG, v, name, required)
}

func checkLOKind(kind error, v, name string, required bool) error {
	return checkText(kind, v, name, required, 64)
}

// checkSH enforces SH: at most 16 characters, no backslash or control characters.
func checkSH(kind error, v, name string, required bool) error {
	return checkText(kind, v, name, required, 16)
}

func checkText(kind error, v, name string, required bool, maxLen int) error {
	if required && strings.TrimSpace(v) == "" {
		return newErr(kind, "", name, "empty")
	}
	if utf8.RuneCountInString(v) > maxLen {
		return newErr(kind, "", name, "%q is longer than %d characters", v, maxLen)
	}
	for _, r := range v {
		if r == '\\' || r < 0x20 && r != 0x1b {
			return newErr(kind, "", name, "%q contains a backslash or control character", v)
		}
	}
	return nil
}

func checkCode(c Code, name string) error { return checkCodeKind(ErrInvalidSEG, c, name) }

func checkCodeKind(kind error, c Code, name string) error {
	if c.Code == "" || c.Scheme == "" || c.Meaning == "" {
		return newErr(kind, "", name, "code %+v needs scheme, code and meaning", c)
	}
	if len(c.Code) > 16 || len(c.Scheme) > 16 {
		return newErr(kind, "", name, "code value or scheme longer than 16 characters: %+v", c)
	}
	if c.Scheme == "SRT" {
		return newErr(kind, "", name, "SRT codes are retired: use SCT")
	}
	return checkLOKind(kind, c.Meaning, name+" CodeMeaning", true)
}

func checkUID(kind error, v, name string, required bool) error {
	if v == "" && !required {
		return nil
	}
	if !dicomstd.ValidUID(v) {
		return newErr(kind, "", name, "%q is not a valid UID", v)
	}
	return nil
}

// sourceImageReferences lists every source instance once (Referenced SOP Class and Instance).
func sourceImageReferences(src *Series) [][]element {
	var refs [][]element
	seen := map[string]bool{}
	for _, sl := range src.Slices {
		if seen[sl.SOPInstanceUID] {
			continue
		}
		seen[sl.SOPInstanceUID] = true
		refs = append(refs, []element{attr(tag.ReferencedSOPClassUID, sl.SOPClassUID), attr(tag.ReferencedSOPInstanceUID, sl.SOPInstanceUID)})
	}
	return refs
}

func checkSource(kind error, src *Series) error {
	if src == nil || len(src.Slices) == 0 {
		return newErr(kind, "", "source", "no source series")
	}
	if src.FrameOfReferenceUID == "" || src.SeriesInstanceUID == "" || src.StudyInstanceUID == "" {
		return newErr(kind, "", "source", "series without Frame of Reference, Study or Series Instance UID")
	}
	return nil
}

// fillIdentity applies the defaults every object this package writes shares: a zero content time
// is now, an empty SOP or Series Instance UID is a new one. It returns the content time.
func fillIdentity(contentTime time.Time, sopInstanceUID, seriesInstanceUID *string) time.Time {
	if contentTime.IsZero() {
		contentTime = time.Now()
	}
	*sopInstanceUID = orDefault(*sopInstanceUID, dicomstd.NewUID())
	*seriesInstanceUID = orDefault(*seriesInstanceUID, dicomstd.NewUID())
	return contentTime
}

// checkIdentityUIDs checks the caller-supplied SOP and Series Instance UIDs of a description
// (empty is allowed: fillIdentity then makes new ones); kind names the object in the error.
func checkIdentityUIDs(kind error, sopInstanceUID, seriesInstanceUID string) error {
	if err := checkUID(kind, sopInstanceUID, "SOPInstanceUID (0008,0018)", false); err != nil {
		return err
	}
	return checkUID(kind, seriesInstanceUID, "SeriesInstanceUID (0020,000E)", false)
}
