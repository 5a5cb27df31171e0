package inference

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestReadNPYHandWritten(t *testing.T) {
	header := "{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }"
	for (10+len(header)+1)%64 != 0 {
		header += " "
	}
	header += "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	b.WriteByte(byte(len(header)))
	b.WriteByte(byte(len(header) >> 8))
	b.WriteString(header)
	for _, v := range []int16{1, -2, 3, -4, 5, 32767} {
		b.WriteByte(byte(uint16(v)))
		b.WriteByte(byte(uint16(v) >> 8))
	}
	a, err := ReadNPY(&b)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{1, -2, 3, -4, 5, 32767}
	if len(a.Shape) != 2 || a.Shape[0] != 2 || a.Shape[1] != 3 {
		t.Fatalf("shape %v, want [2 3]", a.Shape)
	}
	for i, w := range want {
		if a.Data[i] != w {
			t.Errorf("value %d = %v, want %v", i, a.Data[i], w)
		}
	}
}

func npyStream(header, data string) string {
	return "\x93NUMPY\x01\x00" + string([]byte{byte(len(header)), byte(len(header) >> 8)}) + header + data
}

func TestReadNPYRejectsBadInput(t *testing.T) {
	cases := []struct{ name, raw, want string }{
		{"bad magic", "NOTNUMPY", "bad magic"},
		{"fortran order", npyStream("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", "\x00\x00\x00\x00"), "Fortran"},
		{"unknown dtype", npyStream("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", ""), "not supported"},
		{"truncated data", npyStream("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", "\x00\x00"), "npy data"},
		{"missing shape", npyStream("{'descr': '<f4', 'fortran_order': False, }", ""), "lacks"},
	}
	for _, c := range cases {
		_, err := ReadNPY(strings.NewReader(c.raw))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
}

// NumPy writes the archives (stored and deflated members, several dtypes); the reader must return
// exactly what NumPy reports.
func TestReadNPZWrittenByNumPy(t *testing.T) {
	python := requirePython(t, "numpy")
	dir := t.TempDir()
	runPython(t, python, `
import sys, numpy as np
rng = np.random.default_rng(7)
arrays = dict(
    images=rng.integers(0, 256, size=(3, 5, 4), dtype=np.uint8),
    masks=(rng.random((3, 2, 5, 4)) > 0.5).astype(np.uint8),
    probs=rng.random((2, 3)).astype(np.float32),
    f64=rng.normal(size=(7,)),
    i16=np.array([[-5, 7], [300, -32768]], dtype=np.int16),
    scalar=np.float32(2.5),
)
np.savez(sys.argv[1] + "/stored.npz", **arrays)
np.savez_compressed(sys.argv[1] + "/deflated.npz", **arrays)
with open(sys.argv[1] + "/expect.txt", "w") as f:
    for k, v in arrays.items():
        v = np.asarray(v)
        f.write(k + " " + ",".join(map(str, v.shape)) + " " + " ".join(repr(float(x)) for x in v.astype(np.float64).ravel()) + "\n")
`, dir)
	expect := readExpect(t, filepath.Join(dir, "expect.txt"))
	for _, name := range []string{"stored.npz", "deflated.npz"} {
		got, err := ReadNPZ(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for key, e := range expect {
			a, ok := got[key]
			if !ok {
				t.Fatalf("%s: array %s missing", name, key)
			}
			if shapeString(a.Shape) != e.shape {
				t.Errorf("%s %s: shape %v, NumPy %s", name, key, a.Shape, e.shape)
			}
			vals := a.Float32s()
			if len(vals) != len(e.values) {
				t.Fatalf("%s %s: %d values, NumPy %d", name, key, len(vals), len(e.values))
			}
			for i, v := range e.values {
				if float64(vals[i]) != float64(float32(v)) {
					t.Errorf("%s %s[%d] = %v, NumPy %v", name, key, i, vals[i], v)
					break
				}
			}
		}
	}
}

type expectedArray struct {
	shape  string
	values []float64
}

func shapeString(shape []int) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.Itoa(d)
	}
	return strings.Join(parts, ",")
}

// readExpect parses lines "name shape v1 v2 ..." (shape comma-separated, empty for a scalar).
func readExpect(t *testing.T, path string) map[string]expectedArray {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]expectedArray{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.Split(line, " ")
		e := expectedArray{shape: f[1]}
		for _, v := range f[2:] {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("expect line %q: %v", line, err)
			}
			e.values = append(e.values, x)
		}
		out[f[0]] = e
	}
	return out
}
