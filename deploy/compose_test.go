package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"dpersona/dispatch"
	"dpersona/internal/testutil"
)

// Docker Compose: the compose file and the NATS cluster it forms.

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
