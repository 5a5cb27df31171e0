package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// The tests of this package are split by deployment target: systemd_test.go, docker_test.go,
// compose_test.go, helm_test.go and kubernetes_test.go. This file holds what they share (the files
// under test, the binary, YAML walking, serve command lines) and the checks that look across all
// targets at once (every file parses, serve flags exist, data directory and ports agree, the
// example configs start serve).

// The files under test, relative to deploy/.
const (
	unitFile       = "systemd/dpersona.service"
	dockerfile     = "docker/Dockerfile"
	dockerignore   = "docker/Dockerfile.dockerignore"
	composeFile    = "compose/compose.yaml"
	natsValuesFile = "helm/nats-values.yaml"
	configFile     = "config/dpersona.json"
	k8sDir         = "k8s"
)

var (
	repo     = testutil.RepoRoot()
	buildDir string

	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dpersona-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func deployPath(rel string) string { return filepath.Join(repo, "deploy", rel) }

func readDeploy(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(deployPath(rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dpersona builds the binary once for all tests of this package.
func dpersona(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binPath = filepath.Join(buildDir, "dpersona")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/dpersona")
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/dpersona: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

var helpFlagRE = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)`)

// flagsOf lists the long flags that `dpersona <sub> --help` documents.
func flagsOf(t *testing.T, sub string) map[string]bool {
	t.Helper()
	out, err := exec.Command(dpersona(t), sub, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("dpersona %s --help: %v\n%s", sub, err, out)
	}
	flags := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := helpFlagRE.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = true
		}
	}
	if len(flags) == 0 {
		t.Fatalf("dpersona %s --help lists no flags:\n%s", sub, out)
	}
	return flags
}

// loadYAML parses YAML files (every document) with Debian's python3-yaml and returns them as
// JSON-shaped Go values. Go has no YAML parser in this module's dependencies.
func loadYAML(t *testing.T, paths ...string) map[string][]any {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import yaml").Run(); err != nil {
		if testutil.InCI() {
			t.Fatalf("%s cannot import yaml: scripts/setup.sh installs python3-yaml", py)
		}
		t.Skipf("%s cannot import yaml (run scripts/setup.sh, which installs python3-yaml)", py)
	}
	const script = `
import json, sys, yaml
out = {}
for p in sys.argv[1:]:
    with open(p) as f:
        try:
            out[p] = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            sys.exit("%s: %s" % (p, e))
json.dump(out, sys.stdout, default=str)
`
	cmd := exec.Command(py, append([]string{"-c", script}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("YAML does not parse: %v\n%s", err, stderr.String())
	}
	var docs map[string][]any
	if err := json.Unmarshal(out, &docs); err != nil {
		t.Fatal(err)
	}
	return docs
}

// get walks a JSON-shaped value: string keys index maps, ints index slices.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func str(v any) string { s, _ := v.(string); return s }

func list(v any) []any { s, _ := v.([]any); return s }

func allFiles(t *testing.T, exts ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(repo, "deploy"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, e := range exts {
			if !d.IsDir() && strings.HasSuffix(p, e) {
				out = append(out, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestEveryYAMLAndJSONFileParses(t *testing.T) {
	yamls := allFiles(t, ".yaml", ".yml")
	if len(yamls) < 7 {
		t.Fatalf("found only %d YAML files under deploy/: %v", len(yamls), yamls)
	}
	docs := loadYAML(t, yamls...)
	for _, p := range yamls {
		if len(docs[p]) == 0 || docs[p][0] == nil {
			t.Errorf("%s has no document", p)
		}
	}
	for _, p := range allFiles(t, ".json") {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Errorf("%s is not valid JSON", p)
		}
	}
}

func stringsOf(v []any) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = fmt.Sprint(x)
	}
	return out
}

// serveFlags maps the long flags of a `serve` command line to their values ("--a=b" and "--a b").
func serveFlags(args []string) map[string]string {
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			val = args[i+1]
			i++
		}
		flags[name] = val
	}
	return flags
}

func portOf(hostport string) string {
	if i := strings.LastIndex(hostport, ":"); i >= 0 {
		return hostport[i+1:]
	}
	return ""
}

// serveInvocation is one `dpersona serve` command line found in a deployment file.
type serveInvocation struct {
	where string
	args  []string
}

func serveInvocations(t *testing.T) []serveInvocation {
	t.Helper()
	var inv []serveInvocation
	unit := unitDirectives(readDeploy(t, unitFile))
	if len(unit["ExecStart"]) != 1 {
		t.Fatalf("%s: want one ExecStart, got %v", unitFile, unit["ExecStart"])
	}
	inv = append(inv, serveInvocation{unitFile, strings.Fields(unit["ExecStart"][0])[1:]})

	var cmd []string
	if err := json.Unmarshal([]byte(dockerInstruction(t, "CMD")), &cmd); err != nil {
		t.Fatalf("%s: CMD is not an exec-form JSON array: %v", dockerfile, err)
	}
	inv = append(inv, serveInvocation{dockerfile + " CMD", cmd})

	compose := loadYAML(t, deployPath(composeFile))[deployPath(composeFile)][0]
	inv = append(inv, serveInvocation{composeFile + " gateway", stringsOf(list(get(compose, "services", "gateway", "command")))})

	for _, o := range loadK8s(t) {
		for _, c := range list(get(o.doc, "spec", "template", "spec", "containers")) {
			inv = append(inv, serveInvocation{o.kind() + "/" + o.name(), stringsOf(list(get(c, "args")))})
		}
	}
	for _, i := range inv {
		if len(i.args) == 0 || i.args[0] != "serve" {
			t.Errorf("%s: the command line does not start with serve: %q", i.where, i.args)
		}
	}
	return inv
}

func TestServeFlagsInDeployFilesExist(t *testing.T) {
	invocations := serveInvocations(t)
	known := flagsOf(t, "serve")
	for _, inv := range invocations {
		for name := range serveFlags(inv.args[1:]) {
			if !known[name] {
				t.Errorf("%s: `dpersona serve` has no flag --%s", inv.where, name)
			}
		}
	}
}

func TestDataDirAndPortsAgree(t *testing.T) {
	unit := unitDirectives(readDeploy(t, unitFile))
	for _, inv := range serveInvocations(t) {
		f := serveFlags(inv.args[1:])
		if f["data-dir"] != "/var/lib/dpersona" {
			t.Errorf("%s: --data-dir %q, want /var/lib/dpersona (the StateDirectory and image VOLUME)", inv.where, f["data-dir"])
		}
		if p := portOf(f["dicom-listen"]); p != "" && p != "11112" {
			t.Errorf("%s: DICOM port %s, want the unprivileged 11112", inv.where, p)
		}
	}
	if unit["StateDirectory"][0] != "dpersona" {
		t.Errorf("StateDirectory %v does not give /var/lib/dpersona", unit["StateDirectory"])
	}
	if v := dockerInstruction(t, "VOLUME"); !strings.Contains(v, "/var/lib/dpersona") {
		t.Errorf("Dockerfile VOLUME %s", v)
	}
	if e := dockerInstruction(t, "EXPOSE"); !strings.Contains(e, "11112") || !strings.Contains(e, "8080") {
		t.Errorf("Dockerfile EXPOSE %s", e)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestExampleConfigsStartServe starts the real `serve` with each deployment config file (the
// example and the Kubernetes ConfigMap's) and waits until it is ready: serve's own loader accepts
// them, and reports no key that no role reads.
func TestExampleConfigsStartServe(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the gateway")
	}
	configs := map[string][]byte{}
	b, err := os.ReadFile(deployPath(configFile))
	if err != nil {
		t.Fatal(err)
	}
	configs[configFile] = b
	for _, o := range loadK8s(t) {
		if o.kind() == "ConfigMap" {
			configs["ConfigMap/"+o.name()] = []byte(str(get(o.doc, "data", "dpersona.json")))
		}
	}
	serveFlagsKnown := flagsOf(t, "serve")
	for where, cfg := range configs {
		t.Run(strings.ReplaceAll(where, "/", "_"), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dpersona.json")
			if err := os.WriteFile(path, cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			httpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
			args := []string{"serve", "--config", path, "--data-dir", t.TempDir(),
				"--dicom-listen", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), "--http-listen", httpAddr}
			if serveFlagsKnown["roles"] {
				args = append(args, "--roles", "ingest") // no model is installed under /opt here
			}
			var log bytes.Buffer
			cmd := exec.Command(dpersona(t), args...)
			cmd.Stdout, cmd.Stderr = &log, &log
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			ready := false
			deadline := time.Now().Add(60 * time.Second)
		wait:
			for time.Now().Before(deadline) {
				select {
				case err := <-exited:
					t.Fatalf("serve exited with %s: %v\n%s", where, err, log.String())
				default:
				}
				if resp, err := http.Get("http://" + httpAddr + "/readyz"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						ready = true
						break wait
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Error("serve did not stop within 30 s")
			}
			if !ready {
				t.Fatalf("serve with %s never became ready:\n%s", where, log.String())
			}
			sc := bufio.NewScanner(&log)
			for sc.Scan() {
				var rec map[string]any
				if json.Unmarshal(sc.Bytes(), &rec) != nil || rec["msg"] != "configuration key not used by any role" {
					continue
				}
				t.Errorf("%s: serve does not use the key %q", where, str(rec["key"]))
			}
		})
	}
}

// The one shutdown deadline of serve (shutdown_timeout, set in every example config) fits, with
// 10 s to spare for the process to exit, in the grace period of every target that stops it: the
// systemd unit's TimeoutStopSec, the compose gateway's stop_grace_period and every Kubernetes
// workload's terminationGracePeriodSeconds. Otherwise SIGKILL would cut a shutdown that is still
// finishing instances in flight.
func TestShutdownDeadlineFitsGracePeriods(t *testing.T) {
	const spare = 10 * time.Second
	configs := map[string]string{configFile: readDeploy(t, configFile)}
	for _, o := range loadK8s(t) {
		if o.kind() == "ConfigMap" {
			configs["ConfigMap/"+o.name()] = str(get(o.doc, "data", "dpersona.json"))
		}
	}
	var longest time.Duration
	for where, text := range configs {
		var c struct {
			ShutdownTimeout string `json:"shutdown_timeout"`
		}
		if err := json.Unmarshal([]byte(text), &c); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		d, err := time.ParseDuration(c.ShutdownTimeout)
		if err != nil || d <= 0 {
			t.Errorf("%s: shutdown_timeout %q must be set explicitly (a duration), so it is reviewed with the grace periods", where, c.ShutdownTimeout)
			continue
		}
		longest = max(longest, d)
	}
	if longest == 0 {
		return
	}
	grace := map[string]time.Duration{}
	stop := unitDirectives(readDeploy(t, unitFile))["TimeoutStopSec"]
	if len(stop) != 1 {
		t.Fatalf("%s: want one TimeoutStopSec, got %v", unitFile, stop)
	}
	if d, err := time.ParseDuration(stop[0]); err == nil {
		grace[unitFile+" TimeoutStopSec"] = d
	} else {
		t.Errorf("%s: TimeoutStopSec %q: %v", unitFile, stop[0], err)
	}
	doc := loadYAML(t, deployPath(composeFile))[deployPath(composeFile)][0]
	if d, err := time.ParseDuration(str(get(doc, "services", "gateway", "stop_grace_period"))); err == nil {
		grace[composeFile+" gateway stop_grace_period"] = d
	} else {
		t.Errorf("%s: the gateway service needs a stop_grace_period (Docker's default is 10 s): %v", composeFile, err)
	}
	for _, o := range loadK8s(t) {
		if o.kind() != "Deployment" && o.kind() != "StatefulSet" {
			continue
		}
		secs, ok := asSeconds(get(o.doc, "spec", "template", "spec", "terminationGracePeriodSeconds"))
		if !ok {
			t.Errorf("%s %s: no terminationGracePeriodSeconds (Kubernetes' default is 30 s)", o.kind(), o.name())
			continue
		}
		grace[o.kind()+"/"+o.name()+" terminationGracePeriodSeconds"] = time.Duration(secs) * time.Second
	}
	for where, g := range grace {
		if longest+spare > g {
			t.Errorf("%s is %v: shorter than shutdown_timeout %v + %v to exit", where, g, longest, spare)
		}
	}
}

// asSeconds reads a YAML number (decoded as int or float64).
func asSeconds(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case float64:
		return int(n), true
	}
	return 0, false
}
