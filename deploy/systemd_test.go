package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"dpersona/internal/testutil"
)

// systemd: the unit file.

// unitDirectives reads a systemd unit: directive -> values (repeatable), continuation lines joined.
func unitDirectives(text string) map[string][]string {
	d := map[string][]string{}
	var cont strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cont.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "[")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cont.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cont.WriteString(trimmed)
		k, v, _ := strings.Cut(cont.String(), "=")
		d[k] = append(d[k], v)
		cont.Reset()
	}
	return d
}

func TestSystemdUnit(t *testing.T) {
	text := readDeploy(t, unitFile)
	d := unitDirectives(text)
	required := map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
		"MemoryDenyWriteExecute": "yes", "DynamicUser": "yes", "ProtectHome": "yes", "RestrictSUIDSGID": "yes",
	}
	for k, want := range required {
		if v, ok := d[k]; !ok || v[0] != want {
			t.Errorf("%s: %s=%v, want %q", unitFile, k, d[k], want)
		}
	}
	if !contains(d["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter %v lacks @system-service", d["SystemCallFilter"])
	}
	if !contains(d["ReadWritePaths"], "/var/lib/dpersona") {
		t.Errorf("ReadWritePaths %v lacks the data directory", d["ReadWritePaths"])
	}
	if fams := strings.Fields(strings.Join(d["RestrictAddressFamilies"], " ")); len(fams) == 0 || contains(fams, "AF_PACKET") || contains(fams, "AF_NETLINK") {
		t.Errorf("RestrictAddressFamilies %v", fams)
	}
	ortVersion := shellVar(t, "scripts/setup.sh", "ORT_VERSION")
	if !contains(d["Environment"], "DPERSONA_ORT_LIB=/opt/dpersona/lib/libonnxruntime.so."+ortVersion) {
		t.Errorf("Environment %v does not point at onnxruntime %s", d["Environment"], ortVersion)
	}

	analyze := testutil.RequireTool(t, "systemd-analyze") // Debian package systemd, from setup.sh
	// verify checks that ExecStart is executable, so point it at a freshly built binary.
	exe := strings.Fields(d["ExecStart"][0])[0]
	unit := filepath.Join(t.TempDir(), "dpersona.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(text, exe, dpersona(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		// verify exits 0 on unknown keys and bad values; it only warns. Any output is a finding.
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=yes", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2.0 {
		t.Errorf("exposure level %.1f, want <= 2.0 (systemd's \"OK\")", level)
	} else {
		t.Logf("systemd-analyze security exposure level: %.1f", level)
	}
}
