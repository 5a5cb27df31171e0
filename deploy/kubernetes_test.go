package deploy

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"dpersona/dispatch"
	"dpersona/internal/obs"
)

// Kubernetes: the manifests under k8s/ (and their kustomization) against what the gateway serves
// and reads.

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
