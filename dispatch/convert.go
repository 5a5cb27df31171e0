package dispatch

import (
	"encoding/binary"
	"fmt"

	"dpersona/internal/dicomstd"
)

// ExplicitToImplicitLE re-encodes a data set (no meta group) from explicit VR little endian to
// implicit VR little endian: the same elements and values, without VRs, with 32-bit lengths.
// Sequences are walked recursively and written with defined lengths. Encapsulated pixel data
// cannot be implicit and is refused (SEG pixel data is always native).
//
// The reverse needs a data dictionary to recover VRs, so the C-STORE exporter only converts in
// this direction.
func ExplicitToImplicitLE(in []byte) ([]byte, error) {
	out, rest, err := convertElements(in, false)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("explicit VR data set: %d trailing bytes", len(rest))
	}
	return out, nil
}

const undefinedLength = 0xFFFFFFFF

// convertElements converts elements until the input ends or, inside an undefined-length item,
// until the item delimiter (which it consumes). It returns the converted bytes and the input
// left after what it consumed.
func convertElements(in []byte, inItem bool) ([]byte, []byte, error) {
	var out []byte
	for len(in) > 0 {
		if len(in) < 8 {
			return nil, nil, fmt.Errorf("truncated element header (%d bytes left)", len(in))
		}
		group := binary.LittleEndian.Uint16(in[0:2])
		elem := binary.LittleEndian.Uint16(in[2:4])
		if group == 0xFFFE && elem == 0xE00D { // item delimitation
			if !inItem {
				return nil, nil, fmt.Errorf("item delimiter outside an item")
			}
			return out, in[8:], nil
		}
		vr := string(in[4:6])
		var length uint32
		var hdr int
		if dicomstd.LongVR(vr) {
			if len(in) < 12 {
				return nil, nil, fmt.Errorf("(%04X,%04X): truncated header", group, elem)
			}
			length, hdr = binary.LittleEndian.Uint32(in[8:12]), 12
		} else {
			if vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z' {
				return nil, nil, fmt.Errorf("(%04X,%04X): %q is not a VR: the data set is not explicit VR", group, elem, vr)
			}
			length, hdr = uint32(binary.LittleEndian.Uint16(in[6:8])), 8
		}
		in = in[hdr:]
		var value []byte
		if vr == "SQ" {
			var err error
			value, in, err = convertSequence(in, length)
			if err != nil {
				return nil, nil, fmt.Errorf("(%04X,%04X): %w", group, elem, err)
			}
		} else {
			if length == undefinedLength {
				return nil, nil, fmt.Errorf("(%04X,%04X) %s has undefined length (encapsulated data cannot be implicit VR)", group, elem, vr)
			}
			if uint64(length) > uint64(len(in)) {
				return nil, nil, fmt.Errorf("(%04X,%04X): length %d exceeds the %d bytes left", group, elem, length, len(in))
			}
			value, in = in[:length], in[length:]
		}
		out = appendImplicit(out, group, elem, value)
	}
	if inItem {
		return nil, nil, fmt.Errorf("undefined-length item without delimiter")
	}
	return out, in, nil
}

// convertSequence converts the items of a sequence (defined or undefined length) and returns the
// implicit encoding of its value (items with defined lengths).
func convertSequence(in []byte, length uint32) ([]byte, []byte, error) {
	var body, rest []byte
	if length == undefinedLength {
		body, rest = in, nil
	} else {
		if uint64(length) > uint64(len(in)) {
			return nil, nil, fmt.Errorf("sequence length %d exceeds the %d bytes left", length, len(in))
		}
		body, rest = in[:length], in[length:]
	}
	var out []byte
	for len(body) > 0 {
		if len(body) < 8 {
			return nil, nil, fmt.Errorf("truncated item header")
		}
		group := binary.LittleEndian.Uint16(body[0:2])
		elem := binary.LittleEndian.Uint16(body[2:4])
		ilen := binary.LittleEndian.Uint32(body[4:8])
		body = body[8:]
		if group == 0xFFFE && elem == 0xE0DD { // sequence delimitation
			if length != undefinedLength {
				return nil, nil, fmt.Errorf("sequence delimiter in a defined-length sequence")
			}
			return out, body, nil
		}
		if group != 0xFFFE || elem != 0xE000 {
			return nil, nil, fmt.Errorf("(%04X,%04X) where an item was expected", group, elem)
		}
		var item []byte
		var err error
		if ilen == undefinedLength {
			item, body, err = convertElements(body, true)
		} else {
			if uint64(ilen) > uint64(len(body)) {
				return nil, nil, fmt.Errorf("item length %d exceeds the %d bytes left", ilen, len(body))
			}
			var left []byte
			item, left, err = convertElements(body[:ilen], false)
			if err == nil && len(left) != 0 {
				err = fmt.Errorf("item has %d trailing bytes", len(left))
			}
			body = body[ilen:]
		}
		if err != nil {
			return nil, nil, err
		}
		out = appendImplicit(out, 0xFFFE, 0xE000, item)
	}
	if length == undefinedLength {
		return nil, nil, fmt.Errorf("undefined-length sequence without delimiter")
	}
	return out, rest, nil
}

func appendImplicit(out []byte, group, elem uint16, value []byte) []byte {
	var h [8]byte
	binary.LittleEndian.PutUint16(h[0:2], group)
	binary.LittleEndian.PutUint16(h[2:4], elem)
	binary.LittleEndian.PutUint32(h[4:8], uint32(len(value)))
	out = append(out, h[:]...)
	return append(out, value...)
}
