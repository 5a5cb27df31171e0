package testutil

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Orthanc is a real Orthanc PACS started on loopback ports for one test.
type Orthanc struct {
	AET       string
	DICOMPort int
	HTTPPort  int
	Dir       string
	cmd       *exec.Cmd
	cfgPath   string
	logPath   string
}

// OrthancOptions tune the started server; zero values give a permissive downstream PACS.
type OrthancOptions struct {
	AET string
	// Modalities are peers Orthanc may send to (C-STORE SCU): name -> [AET, host, port].
	Modalities map[string][3]any
}

// StartOrthanc starts Orthanc (Debian package) as user nobody on free loopback ports with the
// DICOMweb plugin, waits until its REST API answers, and stops it when the test ends.
func StartOrthanc(t testing.TB, opt OrthancOptions) *Orthanc {
	t.Helper()
	bin := "/usr/sbin/Orthanc"
	if _, err := os.Stat(bin); err != nil {
		RequireTool(t, "Orthanc")
		bin = "Orthanc"
	}
	if opt.AET == "" {
		opt.AET = "ORTHANC"
	}
	dir, err := os.MkdirTemp("", "orthanc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	os.Chmod(filepath.Join(dir, "db"), 0o777)
	o := &Orthanc{AET: opt.AET, DICOMPort: FreePort(t), HTTPPort: FreePort(t), Dir: dir}
	cfg := map[string]any{
		"Name":                    "dpersona-test",
		"StorageDirectory":        filepath.Join(dir, "db"),
		"IndexDirectory":          filepath.Join(dir, "db"),
		"HttpPort":                o.HTTPPort,
		"DicomPort":               o.DICOMPort,
		"DicomAet":                o.AET,
		"RemoteAccessAllowed":     false,
		"AuthenticationEnabled":   false,
		"DicomAlwaysAllowStore":   true,
		"DicomAlwaysAllowEcho":    true,
		"DicomCheckCalledAet":     false,
		"UnknownSopClassAccepted": true,
		"Plugins":                 []string{"/usr/share/orthanc/plugins"},
		"DicomWeb":                map[string]any{"Enable": true, "Root": "/dicom-web/"},
	}
	if len(opt.Modalities) > 0 {
		mods := map[string]any{}
		for k, v := range opt.Modalities {
			mods[k] = []any{v[0], v[1], v[2]}
		}
		cfg["DicomModalities"] = mods
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	o.cfgPath = filepath.Join(dir, "orthanc.json")
	if err := os.WriteFile(o.cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	o.logPath = filepath.Join(dir, "orthanc.log")
	if err := o.start(bin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Stop)
	return o
}

func (o *Orthanc) start(bin string) error {
	logf, err := os.Create(o.logPath)
	if err != nil {
		return err
	}
	os.Chmod(o.logPath, 0o666)
	args := []string{bin, o.cfgPath}
	if os.Geteuid() == 0 {
		// Orthanc refuses nothing as root, but a PACS should not run as root: drop to nobody.
		args = append([]string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start orthanc: %w", err)
	}
	o.cmd = cmd
	go func() { cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(o.URL() + "/system")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(o.logPath)
	return fmt.Errorf("orthanc did not answer within 20s; log:\n%s", log)
}

// URL is the REST API root.
func (o *Orthanc) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", o.HTTPPort) }

// Stop kills the server and waits for its ports to be released.
func (o *Orthanc) Stop() {
	if o.cmd == nil || o.cmd.Process == nil {
		return
	}
	syscall.Kill(-o.cmd.Process.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(o.cmd.Process.Pid, 0); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(-o.cmd.Process.Pid, syscall.SIGKILL)
	o.cmd = nil
}

// Restart starts a stopped server again with the same configuration and storage.
func (o *Orthanc) Restart(t testing.TB) {
	t.Helper()
	bin := "/usr/sbin/Orthanc"
	if _, err := os.Stat(bin); err != nil {
		bin = "Orthanc"
	}
	if err := o.start(bin); err != nil {
		t.Fatal(err)
	}
}

// GetJSON fetches a REST resource into v.
func (o *Orthanc) GetJSON(path string, v any) error {
	resp, err := http.Get(o.URL() + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

// Instances lists the IDs of the instances Orthanc has stored.
func (o *Orthanc) Instances() ([]string, error) {
	var ids []string
	err := o.GetJSON("/instances", &ids)
	return ids, err
}
