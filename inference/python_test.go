package inference

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"dpersona/internal/testutil"
)

// requirePython returns an interpreter that imports the given modules (Debian's /usr/bin/python3
// carries torch; the first python3 on PATH may not). It skips, or fails under CI, when none does.
func requirePython(t *testing.T, modules ...string) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		cmd := exec.Command(path, "-c", "import "+strings.Join(modules, ", "))
		if cmd.Run() == nil {
			return path
		}
	}
	if testutil.InCI() {
		t.Fatalf("no python3 imports %v: `make test` runs scripts/setup.sh, which installs them", modules)
	}
	t.Skipf("no python3 imports %v (run scripts/setup.sh)", modules)
	return ""
}

// runPython runs a script with the repository root on PYTHONPATH (so `training` imports).
func runPython(t *testing.T, python, script string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "script.py")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, append([]string{file}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+testutil.RepoRoot())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python script failed: %v\n%s", err, out)
	}
	return string(out)
}
