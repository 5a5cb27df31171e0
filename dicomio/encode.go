package dicomio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/suyashkumar/dicom/pkg/tag"

	"dpersona/internal/dicomstd"
)

// A small explicit-VR-little-endian encoder. We write derived objects ourselves rather than
// through github.com/suyashkumar/dicom v1.1.0 because that version neither sorts elements nor
// writes a complete file meta group (see the package doc); owning the encoder keeps element
// order, lengths, padding and the meta group (dicomstd.EncodeFileMeta) under test.

// element is one data element; exactly one of the value fields is used, chosen by vr.
type element struct {
	tag   uint32
	vr    string
	str   []string    // AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT
	raw   []byte      // OB OW UN
	u16   []uint16    // US
	u32   []uint32    // UL, AT (group<<16|element)
	items [][]element // SQ
}

// Constructors by named tag (github.com/suyashkumar/dicom/pkg/tag): the value representation
// comes from the data dictionary, so a module builder names attributes, never hex numbers or VRs.

// attr is a string-valued element (AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT).
func attr(t tag.Tag, v ...string) element { return element{tag: t.Uint32(), vr: vrOf(t), str: v} }

// attrUS is a US element (the dictionary VR is not consulted: some tags allow US or SS).
func attrUS(t tag.Tag, v ...uint16) element { return element{tag: t.Uint32(), vr: "US", u16: v} }

// attrUL is a UL element.
func attrUL(t tag.Tag, v ...uint32) element { return element{tag: t.Uint32(), vr: "UL", u32: v} }

// attrAT is an attribute-tag element whose values are tags.
func attrAT(t tag.Tag, v ...tag.Tag) element {
	e := element{tag: t.Uint32(), vr: "AT"}
	for _, x := range v {
		e.u32 = append(e.u32, x.Uint32())
	}
	return e
}

// attrSeq is a sequence with the given items.
func attrSeq(t tag.Tag, items ...[]element) element {
	return element{tag: t.Uint32(), vr: "SQ", items: items}
}

// attrOB is an OB element (pixel data, version fields).
func attrOB(t tag.Tag, raw []byte) element { return element{tag: t.Uint32(), vr: "OB", raw: raw} }

// vrOf returns the dictionary VR of t. A tag missing from the dictionary is a programming error
// in a module builder, caught by any test that encodes the module.
func vrOf(t tag.Tag) string {
	info, err := tag.Find(t)
	if err != nil || len(info.VRs) == 0 {
		panic(fmt.Sprintf("dicomio: tag %v is not in the data dictionary", t))
	}
	return info.VRs[0]
}

func (e *element) valueBytes() []byte {
	var b bytes.Buffer
	switch e.vr {
	case "SQ":
		for _, it := range e.items {
			body := encodeDataset(it)
			var hdr [8]byte
			binary.LittleEndian.PutUint16(hdr[0:], 0xFFFE)
			binary.LittleEndian.PutUint16(hdr[2:], 0xE000)
			binary.LittleEndian.PutUint32(hdr[4:], uint32(len(body)))
			b.Write(hdr[:])
			b.Write(body)
		}
	case "US":
		for _, v := range e.u16 {
			binary.Write(&b, binary.LittleEndian, v)
		}
	case "UL":
		for _, v := range e.u32 {
			binary.Write(&b, binary.LittleEndian, v)
		}
	case "AT":
		for _, v := range e.u32 {
			binary.Write(&b, binary.LittleEndian, uint16(v>>16))
			binary.Write(&b, binary.LittleEndian, uint16(v))
		}
	case "OB", "OW", "UN":
		b.Write(e.raw)
		if b.Len()%2 == 1 {
			b.WriteByte(0)
		}
	default:
		b.WriteString(strings.Join(e.str, `\`))
		if b.Len()%2 == 1 {
			if e.vr == "UI" {
				b.WriteByte(0)
			} else {
				b.WriteByte(' ')
			}
		}
	}
	return b.Bytes()
}

// encodeDataset writes elements sorted by tag, as PS3.5 7.1 requires at every nesting level.
func encodeDataset(elems []element) []byte {
	sorted := append([]element(nil), elems...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].tag < sorted[j].tag })
	var b bytes.Buffer
	for i := range sorted {
		e := &sorted[i]
		v := e.valueBytes()
		var hdr [12]byte
		binary.LittleEndian.PutUint16(hdr[0:], uint16(e.tag>>16))
		binary.LittleEndian.PutUint16(hdr[2:], uint16(e.tag))
		copy(hdr[4:6], e.vr)
		if dicomstd.LongVR(e.vr) {
			binary.LittleEndian.PutUint32(hdr[8:], uint32(len(v)))
			b.Write(hdr[:12])
		} else {
			binary.LittleEndian.PutUint16(hdr[6:], uint16(len(v)))
			b.Write(hdr[:8])
		}
		b.Write(v)
	}
	return b.Bytes()
}

// encodePart10 writes the preamble, the file meta group (dicomstd.EncodeFileMeta, with this
// implementation's class UID) and the data set in explicit VR little endian.
func encodePart10(sopClassUID, sopInstanceUID string, dataset []element) []byte {
	meta := dicomstd.EncodeFileMeta(dicomstd.FileMeta{
		MediaStorageSOPClassUID:    sopClassUID,
		MediaStorageSOPInstanceUID: sopInstanceUID,
		TransferSyntaxUID:          dicomstd.ExplicitVRLittleEndian,
		ImplementationClassUID:     dicomstd.ImplementationClassUID,
		ImplementationVersionName:  dicomstd.ImplementationVersionName,
	})
	return append(meta, encodeDataset(dataset)...)
}

// formatDS renders a decimal string of at most 16 characters (PS3.5 6.2), keeping as many
// significant digits as fit.
func formatDS(v float64) string {
	if s := strconv.FormatFloat(v, 'g', -1, 64); len(s) <= 16 {
		return s
	}
	for prec := 15; prec > 1; prec-- {
		if s := strconv.FormatFloat(v, 'g', prec, 64); len(s) <= 16 {
			return s
		}
	}
	return strconv.FormatFloat(v, 'g', 1, 64)
}

func formatDSs(vs ...float64) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = formatDS(v)
	}
	return out
}
