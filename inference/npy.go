package inference

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Array is one array read from a .npy file: its dtype ('<u1', '<f4', ...), C-order shape and data
// converted to float32 (uint8 masks and images convert exactly).
type Array struct {
	Name  string
	DType string
	Shape []int
	Data  []float32
	// Uint8 holds the raw bytes when the dtype is |u1 or |b1, which saves converting large masks.
	Uint8 []uint8
}

// Len is the number of elements.
func (a *Array) Len() int {
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	return n
}

// ReadNPZ reads every array of a NumPy .npz archive (stored or deflated members).
func ReadNPZ(path string) (map[string]*Array, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("npz %s: %w", path, err)
	}
	defer zr.Close()
	out := make(map[string]*Array, len(zr.File))
	for _, f := range zr.File {
		if !strings.HasSuffix(f.Name, ".npy") {
			continue
		}
		name := strings.TrimSuffix(f.Name, ".npy")
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("npz %s member %s: %w", path, f.Name, err)
		}
		a, err := ReadNPY(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("npz %s member %s: %w", path, f.Name, err)
		}
		a.Name = name
		out[name] = a
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("npz %s: no .npy members", path)
	}
	return out, nil
}

var npyMagic = []byte("\x93NUMPY")

// ReadNPY reads one .npy stream (format versions 1, 2 and 3; little-endian or single-byte dtypes;
// C order only).
func ReadNPY(r io.Reader) (*Array, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("npy header: %w", err)
	}
	if !bytes.Equal(pre[:6], npyMagic) {
		return nil, fmt.Errorf("not a .npy stream (bad magic)")
	}
	var hlen int
	switch pre[6] {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return nil, fmt.Errorf("npy format version %d.%d is not supported", pre[6], pre[7])
	}
	if hlen > 1<<20 {
		return nil, fmt.Errorf("npy header of %d bytes is implausible", hlen)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("npy header: %w", err)
	}
	descr, fortran, shape, err := parseNPYHeader(string(hdr))
	if err != nil {
		return nil, err
	}
	if fortran {
		return nil, fmt.Errorf("npy array is in Fortran order; only C order is supported")
	}
	a := &Array{DType: descr, Shape: shape}
	n := a.Len()
	size, ok := npyItemSize[descr]
	if !ok {
		return nil, fmt.Errorf("npy dtype %q is not supported", descr)
	}
	if n < 0 || n > (1<<34)/size {
		return nil, fmt.Errorf("npy shape %v is too large", shape)
	}
	buf := make([]byte, n*size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("npy data (%d bytes for shape %v %s): %w", len(buf), shape, descr, err)
	}
	switch descr {
	case "|u1", "|b1", "<u1":
		a.Uint8 = buf
		a.Data = nil
		return a, nil
	}
	a.Data = make([]float32, n)
	for i := range a.Data {
		switch descr {
		case "<f4":
			a.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		case "<f8":
			a.Data[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(buf[8*i:])))
		case "|i1":
			a.Data[i] = float32(int8(buf[i]))
		case "<i2":
			a.Data[i] = float32(int16(binary.LittleEndian.Uint16(buf[2*i:])))
		case "<u2":
			a.Data[i] = float32(binary.LittleEndian.Uint16(buf[2*i:]))
		case "<i4":
			a.Data[i] = float32(int32(binary.LittleEndian.Uint32(buf[4*i:])))
		case "<i8":
			a.Data[i] = float32(int64(binary.LittleEndian.Uint64(buf[8*i:])))
		}
	}
	return a, nil
}

var npyItemSize = map[string]int{
	"|u1": 1, "<u1": 1, "|b1": 1, "|i1": 1, "<i2": 2, "<u2": 2, "<i4": 4, "<i8": 8, "<f4": 4, "<f8": 8,
}

// Float32s returns the data as float32, converting single-byte arrays on demand.
func (a *Array) Float32s() []float32 {
	if a.Data == nil && a.Uint8 != nil {
		a.Data = make([]float32, len(a.Uint8))
		for i, b := range a.Uint8 {
			a.Data[i] = float32(b)
		}
	}
	return a.Data
}

// parseNPYHeader parses the Python dict literal of a .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
func parseNPYHeader(h string) (descr string, fortran bool, shape []int, err error) {
	h = strings.TrimSpace(h)
	if !strings.HasPrefix(h, "{") || !strings.HasSuffix(h, "}") {
		return "", false, nil, fmt.Errorf("npy header %q is not a dict", h)
	}
	body := h[1 : len(h)-1]
	found := map[string]bool{}
	for len(strings.TrimSpace(body)) > 0 {
		body = strings.TrimLeft(body, " ,")
		if body == "" {
			break
		}
		key, rest, ok := cutQuoted(body)
		if !ok {
			return "", false, nil, fmt.Errorf("npy header %q: expected a quoted key", h)
		}
		rest = strings.TrimLeft(rest, " ")
		if !strings.HasPrefix(rest, ":") {
			return "", false, nil, fmt.Errorf("npy header %q: expected ':' after %q", h, key)
		}
		rest = strings.TrimLeft(rest[1:], " ")
		switch key {
		case "descr":
			descr, rest, ok = cutQuoted(rest)
			if !ok {
				return "", false, nil, fmt.Errorf("npy header %q: descr is not a string", h)
			}
		case "fortran_order":
			switch {
			case strings.HasPrefix(rest, "False"):
				rest = rest[5:]
			case strings.HasPrefix(rest, "True"):
				fortran, rest = true, rest[4:]
			default:
				return "", false, nil, fmt.Errorf("npy header %q: fortran_order is not a bool", h)
			}
		case "shape":
			end := strings.IndexByte(rest, ')')
			if !strings.HasPrefix(rest, "(") || end < 0 {
				return "", false, nil, fmt.Errorf("npy header %q: shape is not a tuple", h)
			}
			shape = []int{}
			for _, p := range strings.Split(rest[1:end], ",") {
				p = strings.TrimSpace(p)
				if p == "" {
					continue
				}
				d, err := strconv.Atoi(strings.TrimSuffix(p, "L"))
				if err != nil || d < 0 {
					return "", false, nil, fmt.Errorf("npy header %q: bad dimension %q", h, p)
				}
				shape = append(shape, d)
			}
			rest = rest[end+1:]
		default:
			return "", false, nil, fmt.Errorf("npy header %q: unknown key %q", h, key)
		}
		found[key] = true
		body = rest
	}
	if !found["descr"] || !found["fortran_order"] || !found["shape"] {
		return "", false, nil, fmt.Errorf("npy header %q lacks descr, fortran_order or shape", h)
	}
	return descr, fortran, shape, nil
}

// cutQuoted splits a leading '...' or "..." string off s.
func cutQuoted(s string) (string, string, bool) {
	if s == "" || (s[0] != '\'' && s[0] != '"') {
		return "", s, false
	}
	end := strings.IndexByte(s[1:], s[0])
	if end < 0 {
		return "", s, false
	}
	return s[1 : 1+end], s[end+2:], true
}
