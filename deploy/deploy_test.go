package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"dpersona/dispatch"
	"dpersona/internal/obs"
	"dpersona/internal/testutil"
)

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

// servingPaths are the probe paths the gateway really serves, taken from obs.Mount.
func servingPaths(t *testing.T) func(path string) bool {
	mux := http.NewServeMux()
	obs.Mount(mux)
	return func(path string) bool {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code == http.StatusOK
	}
}

type k8sObject struct {
	file string
	doc  map[string]any
}

func (o k8sObject) kind() string { return str(o.doc["kind"]) }
func (o k8sObject) name() string { return str(get(o.doc, "metadata", "name")) }

func loadK8s(t *testing.T) []k8sObject {
	t.Helper()
	var files []string
	entries, err := os.ReadDir(deployPath(k8sDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") {
			files = append(files, deployPath(filepath.Join(k8sDir, e.Name())))
		}
	}
	docs := loadYAML(t, files...)
	var objs []k8sObject
	for _, f := range files {
		for _, d := range docs[f] {
			m, ok := d.(map[string]any)
			if !ok {
				t.Errorf("%s: a document is not a mapping", f)
				continue
			}
			objs = append(objs, k8sObject{file: filepath.Base(f), doc: m})
		}
	}
	return objs
}

func TestKubernetesManifests(t *testing.T) {
	objs := loadK8s(t)
	serves := servingPaths(t)
	byKind := map[string][]k8sObject{}
	for _, o := range objs {
		if str(o.doc["apiVersion"]) == "" || o.kind() == "" {
			t.Errorf("%s: object without apiVersion or kind: %v", o.file, o.doc)
			continue
		}
		byKind[o.kind()] = append(byKind[o.kind()], o)
		if o.kind() == "Kustomization" {
			continue
		}
		if o.name() == "" {
			t.Errorf("%s: %s without metadata.name", o.file, o.kind())
		}
		if o.kind() != "Namespace" && str(get(o.doc, "metadata", "namespace")) != "dpersona" {
			t.Errorf("%s: %s/%s is not in namespace dpersona", o.file, o.kind(), o.name())
		}
	}
	for _, want := range []string{"Namespace", "ConfigMap", "StatefulSet", "Deployment", "Service", "Kustomization"} {
		if len(byKind[want]) == 0 {
			t.Errorf("no %s among the manifests", want)
		}
	}

	configMaps := map[string]map[string]any{}
	for _, cm := range byKind["ConfigMap"] {
		data, _ := cm.doc["data"].(map[string]any)
		configMaps[cm.name()] = data
	}

	type workload struct {
		obj    k8sObject
		labels map[string]any
		ports  map[string]bool
	}
	var workloads []workload
	for _, o := range append(append([]k8sObject{}, byKind["StatefulSet"]...), byKind["Deployment"]...) {
		where := o.kind() + "/" + o.name()
		spec := get(o.doc, "spec", "template", "spec")
		labels, _ := get(o.doc, "spec", "template", "metadata", "labels").(map[string]any)
		sel, _ := get(o.doc, "spec", "selector", "matchLabels").(map[string]any)
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s: selector %s=%v does not match the pod labels %v", where, k, v, labels)
			}
		}
		psc := get(spec, "securityContext")
		if get(psc, "runAsNonRoot") != true {
			t.Errorf("%s: pod securityContext.runAsNonRoot is not true", where)
		}
		if uid, _ := get(psc, "runAsUser").(float64); uid == 0 {
			t.Errorf("%s: runAsUser must be a non-zero uid", where)
		}
		if str(get(psc, "seccompProfile", "type")) != "RuntimeDefault" {
			t.Errorf("%s: seccompProfile is not RuntimeDefault", where)
		}
		volumes := map[string]any{}
		for _, v := range list(get(spec, "volumes")) {
			volumes[str(get(v, "name"))] = v
		}
		claimTemplates := map[string]bool{}
		for _, c := range list(get(o.doc, "spec", "volumeClaimTemplates")) {
			claimTemplates[str(get(c, "metadata", "name"))] = true
		}
		ports := map[string]bool{}
		containers := list(get(spec, "containers"))
		if len(containers) == 0 {
			t.Errorf("%s: no containers", where)
		}
		for _, c := range containers {
			cname := where + "/" + str(get(c, "name"))
			for _, p := range list(get(c, "ports")) {
				ports[str(get(p, "name"))] = true
			}
			csc := get(c, "securityContext")
			if get(csc, "readOnlyRootFilesystem") != true || get(csc, "allowPrivilegeEscalation") != false {
				t.Errorf("%s: needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false", cname)
			}
			if drop := list(get(csc, "capabilities", "drop")); len(drop) != 1 || drop[0] != "ALL" {
				t.Errorf("%s: capabilities must drop ALL, got %v", cname, drop)
			}
			for probe, wantPath := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"} {
				path := str(get(c, probe, "httpGet", "path"))
				if path != wantPath {
					t.Errorf("%s: %s path %q, want %q", cname, probe, path, wantPath)
				}
				if path != "" && !serves(path) {
					t.Errorf("%s: %s path %q is not served by obs.Mount", cname, probe, path)
				}
				port := get(c, probe, "httpGet", "port")
				if pn, ok := port.(string); ok && !ports[pn] {
					t.Errorf("%s: %s port %q is not a named container port", cname, probe, pn)
				}
			}
			args := stringsOf(list(get(c, "args")))
			flags := serveFlags(args)
			httpPort := portOf(flags["http-listen"])
			if httpPort == "" {
				t.Errorf("%s: no --http-listen: the probes need the HTTP server", cname)
			}
			for _, p := range list(get(c, "ports")) {
				if str(get(p, "name")) == "http" && fmt.Sprint(get(p, "containerPort")) != httpPort {
					t.Errorf("%s: port http is %v but --http-listen is on %s", cname, get(p, "containerPort"), httpPort)
				}
			}
			mounts := map[string]string{}
			for _, m := range list(get(c, "volumeMounts")) {
				name, path := str(get(m, "name")), str(get(m, "mountPath"))
				mounts[path] = name
				if volumes[name] == nil && !claimTemplates[name] {
					t.Errorf("%s: volumeMount %q has no volume or claim template", cname, name)
				}
			}
			if mounts["/tmp"] == "" {
				t.Errorf("%s: read-only root file system but no writable /tmp", cname)
			}
			dataDir := flags["data-dir"]
			if dataDir == "" || mounts[dataDir] == "" {
				t.Errorf("%s: --data-dir %q is not a mounted volume (read-only root fs)", cname, dataDir)
			}
			if cfg := flags["config"]; cfg != "" {
				vol := mounts[filepath.Dir(cfg)]
				cmName := str(get(volumes[vol], "configMap", "name"))
				if configMaps[cmName] == nil || configMaps[cmName][filepath.Base(cfg)] == nil {
					t.Errorf("%s: --config %s is not a key of a ConfigMap mounted there", cname, cfg)
				}
			}
			if o.kind() == "StatefulSet" {
				if !claimTemplates[mounts[dataDir]] {
					t.Errorf("%s: the ingest data directory must be a PersistentVolumeClaim template", cname)
				}
			}
			if o.kind() == "Deployment" {
				if gpu := get(c, "resources", "limits", "nvidia.com/gpu"); gpu == nil {
					t.Errorf("%s: the inference Deployment must request nvidia.com/gpu", cname)
				}
			}
		}
		workloads = append(workloads, workload{o, labels, ports})
	}

	for _, svc := range byKind["Service"] {
		sel, _ := get(svc.doc, "spec", "selector").(map[string]any)
		var matched []workload
		for _, w := range workloads {
			ok := len(sel) > 0
			for k, v := range sel {
				if w.labels[k] != v {
					ok = false
				}
			}
			if ok {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			t.Errorf("Service/%s selects no workload (%v)", svc.name(), sel)
		}
		for _, p := range list(get(svc.doc, "spec", "ports")) {
			if tp, ok := get(p, "targetPort").(string); ok {
				for _, w := range matched {
					if !w.ports[tp] {
						t.Errorf("Service/%s: targetPort %q is not a port of %s", svc.name(), tp, w.obj.name())
					}
				}
			}
		}
	}
	for _, sts := range byKind["StatefulSet"] {
		found := false
		for _, svc := range byKind["Service"] {
			if svc.name() == str(get(sts.doc, "spec", "serviceName")) && str(get(svc.doc, "spec", "clusterIP")) == "None" {
				found = true
			}
		}
		if !found {
			t.Errorf("StatefulSet/%s: serviceName must name a headless Service", sts.name())
		}
	}

	// The kustomization lists every manifest except the example Secret.
	for _, k := range byKind["Kustomization"] {
		listed := map[string]bool{}
		for _, r := range list(get(k.doc, "resources")) {
			listed[str(r)] = true
			if _, err := os.Stat(deployPath(filepath.Join(k8sDir, str(r)))); err != nil {
				t.Errorf("kustomization lists missing %s", str(r))
			}
		}
		entries, _ := os.ReadDir(deployPath(k8sDir))
		for _, e := range entries {
			n := e.Name()
			if strings.HasSuffix(n, ".yaml") && n != "kustomization.yaml" && !strings.Contains(n, ".example.") && !listed[n] {
				t.Errorf("kustomization does not list %s", n)
			}
		}
	}

	// The ConfigMap's config file is a valid routing config.
	for name, data := range configMaps {
		for key, v := range data {
			if strings.HasSuffix(key, ".json") {
				checkRouting(t, "ConfigMap/"+name+"/"+key, []byte(str(v)))
			}
		}
	}
}

func checkRouting(t *testing.T, where string, b []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := dispatch.LoadRouting(p)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if len(r.Routes) == 0 {
		t.Errorf("%s: no routes", where)
	}
}

func TestKustomizeBuilds(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		// Not a Debian 12 package, so setup.sh cannot install it; the structural test above runs
		// everywhere.
		t.Skip("kubectl is not installed: kustomize build not checked")
	}
	out, err := exec.Command(kubectl, "kustomize", deployPath(k8sDir)).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize deploy/k8s: %v\n%s", err, out)
	}
	for _, kind := range []string{"kind: StatefulSet", "kind: Deployment", "kind: ConfigMap"} {
		if !bytes.Contains(out, []byte(kind)) {
			t.Errorf("kustomize output lacks %s", kind)
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

// dockerInstruction returns the arguments of the last instruction of that name (continuations
// joined).
func dockerInstruction(t *testing.T, name string) string {
	t.Helper()
	var last string
	for _, ins := range dockerInstructions(t) {
		if ins[0] == name {
			last = ins[1]
		}
	}
	if last == "" {
		t.Fatalf("%s has no %s", dockerfile, name)
	}
	return last
}

func dockerInstructions(t *testing.T) [][2]string {
	t.Helper()
	var out [][2]string
	var cur strings.Builder
	for _, line := range strings.Split(readDeploy(t, dockerfile), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		name, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, [2]string{strings.ToUpper(name), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

func shellVar(t *testing.T, file, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, file))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*:?=\s*(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s sets no %s", file, name)
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	ortVersion := shellVar(t, "scripts/setup.sh", "ORT_VERSION")
	if mk := shellVar(t, "Makefile", "ORT_VERSION"); mk != ortVersion {
		t.Errorf("Makefile ORT_VERSION %s != scripts/setup.sh %s", mk, ortVersion)
	}
	lib := "third_party/onnxruntime/libonnxruntime.so." + ortVersion
	ins := dockerInstructions(t)

	var froms []string
	copies := map[string]string{} // source -> destination (from the context)
	envs := ""
	for _, in := range ins {
		switch in[0] {
		case "FROM":
			froms = append(froms, in[1])
		case "COPY":
			f := strings.Fields(in[1])
			if strings.HasPrefix(f[0], "--from=") {
				continue
			}
			for _, src := range f[:len(f)-1] {
				copies[strings.TrimPrefix(src, "./")] = f[len(f)-1]
			}
		case "ENV":
			envs += " " + in[1]
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:${GO_VERSION}-bookworm AS build") || !strings.HasPrefix(froms[1], "debian:12-slim") {
		t.Errorf("want a golang bookworm build stage and a debian:12-slim runtime, got %q", froms)
	}
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVer := ""
	if m := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(gomod); m != nil {
		goVer = string(m[1])
	}
	argGo := ""
	for _, in := range ins {
		if in[0] == "ARG" && strings.HasPrefix(in[1], "GO_VERSION=") {
			argGo = strings.TrimPrefix(in[1], "GO_VERSION=")
		}
	}
	if argGo == "" || !strings.HasPrefix(goVer, argGo) {
		t.Errorf("ARG GO_VERSION=%s does not match go.mod's go %s", argGo, goVer)
	}

	dest, ok := copies[lib]
	if !ok {
		t.Fatalf("the image does not carry %s (ORT_VERSION %s of scripts/setup.sh); COPY sources: %v", lib, ortVersion, copies)
	}
	if !strings.Contains(envs, "DPERSONA_ORT_LIB="+dest) {
		t.Errorf("DPERSONA_ORT_LIB does not point at the copied library %s: ENV%s", dest, envs)
	}
	if _, ok := copies["models/default"]; !ok {
		t.Error("the image does not carry models/default")
	}

	// Every package the binary is built from is in the build context.
	listCmd := exec.Command("go", "list", "-deps", "./cmd/dpersona")
	listCmd.Dir = repo
	out, err := listCmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/dpersona: %v", err)
	}
	ignore := readDeploy(t, dockerignore)
	for _, pkg := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(pkg, "dpersona/")
		if !ok {
			continue
		}
		top := strings.Split(rel, "/")[0]
		if _, ok := copies[top]; !ok {
			t.Errorf("the build stage does not COPY %s/ (needed by %s)", top, pkg)
		}
		if !strings.Contains(ignore, "!"+top+"/") {
			t.Errorf("%s excludes %s/ from the build context", dockerignore, top)
		}
	}
	for src := range copies {
		if src == lib || src == "models/default" {
			continue // made by scripts/setup.sh and by training export, not committed
		}
		if _, err := os.Stat(filepath.Join(repo, src)); err != nil {
			t.Errorf("COPY source %s does not exist", src)
		}
		if !strings.Contains(ignore, "!"+src) {
			t.Errorf("%s excludes COPY source %s", dockerignore, src)
		}
	}

	user := dockerInstruction(t, "USER")
	if uid := strings.Split(user, ":")[0]; uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: the runtime must not run as root", user)
	}

	// HEALTHCHECK runs `dpersona status --live` against the --http-listen port of CMD.
	hc := dockerInstruction(t, "HEALTHCHECK")
	_, hcCmd, ok := strings.Cut(hc, "CMD ")
	var hcArgs []string
	if !ok || json.Unmarshal([]byte(hcCmd), &hcArgs) != nil || len(hcArgs) < 3 {
		t.Fatalf("HEALTHCHECK %q: want CMD [\"/opt/dpersona/bin/dpersona\", \"status\", \"--live\", ...]", hc)
	}
	if hcArgs[1] != "status" {
		t.Fatalf("HEALTHCHECK does not run dpersona status: %q", hcArgs)
	}
	statusFlags := flagsOf(t, "status")
	hf := serveFlags(hcArgs[2:])
	for name := range hf {
		if !statusFlags[name] {
			t.Errorf("HEALTHCHECK: `dpersona status` has no flag --%s", name)
		}
	}
	var cmd []string
	json.Unmarshal([]byte(dockerInstruction(t, "CMD")), &cmd)
	if _, live := hf["live"]; !live || portOf(hf["http"]) != portOf(serveFlags(cmd)["http-listen"]) {
		t.Errorf("HEALTHCHECK %q must check liveness on the --http-listen port of CMD %q", hcArgs, cmd)
	}
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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestComposeFile(t *testing.T) {
	doc := loadYAML(t, deployPath(composeFile))[deployPath(composeFile)][0]
	services, _ := get(doc, "services").(map[string]any)
	for _, s := range []string{"gateway", "nats-1", "nats-2", "nats-3", "orthanc"} {
		if services[s] == nil {
			t.Errorf("compose has no service %s", s)
		}
	}
	// Each NATS node runs JetStream in one named cluster and routes to the two others.
	clusterName := ""
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("nats-%d", i)
		f := serveFlags(stringsOf(list(get(services[name], "command"))))
		if _, js := f["jetstream"]; !js {
			t.Errorf("%s: JetStream is not enabled", name)
		}
		if f["name"] != name {
			t.Errorf("%s: server name %q must be unique and match the service", name, f["name"])
		}
		if clusterName == "" {
			clusterName = f["cluster_name"]
		}
		if f["cluster_name"] == "" || f["cluster_name"] != clusterName {
			t.Errorf("%s: cluster_name %q", name, f["cluster_name"])
		}
		routes := f["routes"]
		for j := 1; j <= 3; j++ {
			other := fmt.Sprintf("nats-%d:6222", j)
			if (j != i) != strings.Contains(routes, other) {
				t.Errorf("%s: routes %q (want the two other nodes only)", name, routes)
			}
		}
		if len(list(get(services[name], "volumes"))) == 0 {
			t.Errorf("%s: JetStream store is not on a volume", name)
		}
	}
	gw := services["gateway"]
	natsURL := serveFlags(stringsOf(list(get(gw, "command"))))["nats-url"]
	for i := 1; i <= 3; i++ {
		if !strings.Contains(natsURL, fmt.Sprintf("nats://nats-%d:4222", i)) {
			t.Errorf("gateway --nats-url %q does not list nats-%d", natsURL, i)
		}
	}
	if get(gw, "read_only") != true || !contains(stringsOf(list(get(gw, "cap_drop"))), "ALL") {
		t.Error("gateway: want read_only: true and cap_drop: [ALL]")
	}
	if df := str(get(gw, "build", "dockerfile")); df == "" {
		t.Error("gateway: no build.dockerfile")
	} else if _, err := os.Stat(filepath.Join(deployPath("compose"), str(get(gw, "build", "context")), df)); err != nil {
		t.Errorf("gateway build: %v", err)
	}
	for _, v := range stringsOf(list(get(gw, "volumes"))) {
		src := strings.Split(v, ":")[0]
		if strings.HasPrefix(src, ".") {
			if _, err := os.Stat(filepath.Join(deployPath("compose"), src)); err != nil {
				t.Errorf("gateway volume source %s: %v", src, err)
			}
		}
	}
	// The destination the config sends results to is the compose Orthanc.
	r, err := dispatch.LoadRouting(deployPath(configFile))
	if err != nil {
		t.Fatalf("%s: %v", configFile, err)
	}
	orthancAET := ""
	for k, v := range get(services["orthanc"], "environment").(map[string]any) {
		if k == "ORTHANC__DICOM_AET" {
			orthancAET = str(v)
		}
	}
	if len(r.Destinations) == 0 || r.Destinations[0].Host != "orthanc" || r.Destinations[0].AETitle != orthancAET {
		t.Errorf("%s: first destination %+v should be the compose Orthanc (AE %s)", configFile, r.Destinations, orthancAET)
	}
}

func TestNATSHelmValues(t *testing.T) {
	doc := loadYAML(t, deployPath(natsValuesFile))[deployPath(natsValuesFile)][0]
	if get(doc, "config", "cluster", "enabled") != true || get(doc, "config", "cluster", "replicas") != float64(3) {
		t.Errorf("want config.cluster enabled with 3 replicas: %v", get(doc, "config", "cluster"))
	}
	if get(doc, "config", "jetstream", "enabled") != true || get(doc, "config", "jetstream", "fileStore", "enabled") != true ||
		get(doc, "config", "jetstream", "fileStore", "pvc", "enabled") != true {
		t.Errorf("want JetStream with file storage on a PVC: %v", get(doc, "config", "jetstream"))
	}
	// The workloads connect to the Service the chart creates for release "nats" in namespace "nats".
	for _, inv := range serveInvocations(t) {
		if strings.HasPrefix(inv.where, "StatefulSet/") || strings.HasPrefix(inv.where, "Deployment/") {
			if u := serveFlags(inv.args[1:])["nats-url"]; u != "nats://nats.nats.svc.cluster.local:4222" {
				t.Errorf("%s: --nats-url %q is not the chart's Service", inv.where, u)
			}
		}
	}
}

// TestComposeNATSClusterForms runs the three NATS commands of the compose file with a nats-server
// built from the Go module, on loopback ports instead of the compose network names, and checks
// that they form one cluster with a JetStream meta leader and answer the compose health check.
func TestComposeNATSClusterForms(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds nats-server and starts three servers")
	}
	doc := loadYAML(t, deployPath(composeFile))[deployPath(composeFile)][0]
	natsBin := filepath.Join(buildDir, "nats-server")
	build := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build nats-server: %v\n%s", err, out)
	}
	type node struct{ client, cluster, monitor int }
	nodes := map[string]node{}
	for i := 1; i <= 3; i++ {
		nodes[fmt.Sprintf("nats-%d", i)] = node{testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)}
	}
	healthURL := ""
	for _, a := range stringsOf(list(get(doc, "services", "nats-1", "healthcheck", "test"))) {
		if strings.HasPrefix(a, "http://") {
			healthURL = a
		}
	}
	if !strings.HasPrefix(healthURL, "http://127.0.0.1:8222/") {
		t.Fatalf("compose NATS health check %q does not probe the monitor port 8222", healthURL)
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}()
	logs := map[string]*bytes.Buffer{}
	for name, n := range nodes {
		args := stringsOf(list(get(doc, "services", name, "command")))
		for i := 0; i < len(args); i++ {
			switch args[i] {
			case "--store_dir":
				args[i+1] = t.TempDir()
			case "--http_port":
				args[i+1] = strconv.Itoa(n.monitor)
			case "--cluster":
				args[i+1] = fmt.Sprintf("nats://127.0.0.1:%d", n.cluster)
			case "--routes":
				for other, on := range nodes {
					args[i+1] = strings.ReplaceAll(args[i+1], other+":6222", fmt.Sprintf("127.0.0.1:%d", on.cluster))
				}
			}
		}
		args = append(args, "--addr", "127.0.0.1", "--port", strconv.Itoa(n.client))
		cmd := exec.Command(natsBin, args...)
		logs[name] = &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = logs[name], logs[name]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	getJSON := func(url string, v any) int {
		resp, err := http.Get(url)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		if v != nil {
			json.NewDecoder(resp.Body).Decode(v)
		}
		return resp.StatusCode
	}
	for name, n := range nodes {
		mon := fmt.Sprintf("http://127.0.0.1:%d", n.monitor)
		health := strings.Replace(healthURL, "http://127.0.0.1:8222", mon, 1)
		ok := false
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			var jsz struct {
				Meta struct {
					Leader      string `json:"leader"`
					ClusterSize int    `json:"cluster_size"`
				} `json:"meta_cluster"`
			}
			var routez struct {
				NumRoutes int `json:"num_routes"`
			}
			if getJSON(health, nil) == 200 && getJSON(mon+"/jsz", &jsz) == 200 && getJSON(mon+"/routez", &routez) == 200 &&
				jsz.Meta.Leader != "" && jsz.Meta.ClusterSize == 3 && routez.NumRoutes >= 2 {
				ok = true
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !ok {
			t.Errorf("%s did not join a 3-node JetStream cluster with a meta leader within 60 s; log:\n%s", name, logs[name].String())
		}
	}
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

// dockerignoreIncludes applies deploy/docker/Dockerfile.dockerignore to a path relative to the
// repository root: the last matching rule wins. It understands the rule forms that file uses
// ("*", "!dir/", "!file", "**/*suffix", "**/dir/"), and fails on any other, so that a new form is
// not silently misread.
func dockerignoreIncludes(t *testing.T, rules []string, rel string) bool {
	included := true
	for _, r := range rules {
		neg := strings.HasPrefix(r, "!")
		p := strings.TrimPrefix(r, "!")
		var match bool
		switch {
		case p == "*":
			match = true
		case strings.HasPrefix(p, "**/") && strings.HasSuffix(p, "/"):
			dir := strings.TrimSuffix(strings.TrimPrefix(p, "**/"), "/")
			match = contains(strings.Split(filepath.Dir(rel), "/"), dir)
		case strings.HasPrefix(p, "**/*"):
			match = strings.HasSuffix(rel, strings.TrimPrefix(p, "**/*"))
		case !strings.ContainsAny(p, "*?["):
			match = rel == strings.TrimSuffix(p, "/") || strings.HasPrefix(rel, strings.TrimSuffix(p, "/")+"/")
		default:
			t.Fatalf("dockerignore rule %q: form not understood by this test", r)
		}
		if match {
			included = neg
		}
	}
	return included
}

// TestDockerBuildStageCompiles repeats the build stage without a container engine: it lays out
// exactly what the Dockerfile COPYs into /src from the context that the dockerignore lets through,
// and runs the same go build there, so a package or file missing from the image build fails here.
func TestDockerBuildStageCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: compiles the binary from a filtered copy of the tree")
	}
	var rules []string
	for _, line := range strings.Split(readDeploy(t, dockerignore), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			rules = append(rules, line)
		}
	}
	src := t.TempDir()
	stage := 0
	var buildCmd string
	for _, in := range dockerInstructions(t) {
		switch in[0] {
		case "FROM":
			stage++
		case "RUN":
			if stage == 1 && strings.Contains(in[1], "go build") {
				buildCmd = in[1]
			}
		case "COPY":
			if stage != 1 {
				continue
			}
			f := strings.Fields(in[1])
			for _, from := range f[:len(f)-1] {
				from = strings.TrimPrefix(from, "./")
				err := filepath.WalkDir(filepath.Join(repo, from), func(p string, d os.DirEntry, err error) error {
					if err != nil || d.IsDir() {
						return err
					}
					rel, _ := filepath.Rel(repo, p)
					if !dockerignoreIncludes(t, rules, filepath.ToSlash(rel)) {
						return nil
					}
					b, err := os.ReadFile(p)
					if err != nil {
						return err
					}
					dst := filepath.Join(src, rel)
					if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
						return err
					}
					return os.WriteFile(dst, b, 0o644)
				})
				if err != nil {
					t.Fatalf("COPY %s: %v", from, err)
				}
			}
		}
	}
	if !strings.Contains(buildCmd, "-o /out/dpersona ./cmd/dpersona") {
		t.Fatalf("no `go build ... -o /out/dpersona ./cmd/dpersona` in the build stage: %q", buildCmd)
	}
	if _, err := os.Stat(filepath.Join(src, "cmd", "dpersona", "status_test.go")); err == nil {
		t.Error("the dockerignore lets test files into the build context")
	}
	out := filepath.Join(t.TempDir(), "dpersona")
	// Not the image's -trimpath -s -w: with the flags of the other tests' builds the dependencies
	// come from the build cache, and only the project's own packages compile again (the question
	// here is whether the context is complete, not how the binary is stripped).
	build := exec.Command("go", "build", "-ldflags", "-X main.version=docker-test", "-o", out, "./cmd/dpersona")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "GOFLAGS=-mod=mod")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the build stage would fail: go build in the filtered context: %v\n%s", err, b)
	}
	v, err := exec.Command(out, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "docker-test") {
		t.Errorf("built binary --version: %v %s", err, v)
	}
}
