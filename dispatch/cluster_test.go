package dispatch

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// natsCluster is three nats-server processes (built from the module) clustered on loopback.
func natsCluster(t testing.TB) []*natsProc {
	t.Helper()
	const n = 3
	clientPorts := make([]int, n)
	clusterPorts := make([]int, n)
	for i := range clientPorts {
		clientPorts[i], clusterPorts[i] = testutil.FreePort(t), testutil.FreePort(t)
	}
	var routes []string
	for _, p := range clusterPorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	base := t.TempDir()
	nodes := make([]*natsProc, n)
	for i := 0; i < n; i++ {
		nodes[i] = startNATSProcess(t, filepath.Join(base, fmt.Sprintf("n%d", i+1)), clientPorts[i],
			"-n", fmt.Sprintf("n%d", i+1), "--cluster_name", "dpersona-test",
			"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i]), "--routes", strings.Join(routes, ","))
	}
	return nodes
}

func clusterURL(nodes []*natsProc) string {
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.URL())
	}
	return strings.Join(urls, ",")
}

// TestClusterNodeKilledMidRunLosesNothing: studies flow through a 3-node JetStream cluster with
// every stream, bucket and object store replicated three times. One node is killed (SIGKILL)
// while studies are being published and processed; every study still ends done with its SEG
// objects at the destination.
func TestClusterNodeKilledMidRunLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	nodes := natsCluster(t)
	data := t.TempDir()
	cfg := BusConfig{URL: clusterURL(nodes), DataDir: data, Replicas: 3}
	open := func(name string) *Bus {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := cfg
		c.ConnectName = name
		b, err := OpenBus(ctx, c, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.EnsureTopology(ctx); err != nil {
			b.Close()
			t.Fatalf("%s: %v\nnode 1 log:\n%s", name, err, nodes[0].log())
		}
		return b
	}
	ingest := open("ingest")
	defer ingest.Close()
	worker := open("worker")
	defer worker.Close()
	h := newHarness(t, worker, data)
	dest := orthancSTOW(orthanc)
	routing := ctRoute(dest.Name)
	routing.Destinations = []Destination{dest}
	proc := newFixtureProcessor("w")
	proc.delay = 50 * time.Millisecond
	opt := fastInfer(proc, routing)
	opt.MaxDeliver = 20 // elections take seconds: do not fail a study for them
	h.infer(worker, opt)
	h.export(worker, fastExport(dest, &STOWExporter{URL: dest.URL}))
	h.mover(worker)

	const n = 16
	uid := func(i int) string { return fmt.Sprintf("2.25.777%02d", i) }
	pubCtx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if i == n/2 {
			// Kill the node the ingest client is connected to: its connection and the stream
			// leadership (wherever it is) must fail over without losing anything.
			victim := nodes[0]
			for _, nd := range nodes {
				if strings.HasSuffix(ingest.Conn().ConnectedUrl(), fmt.Sprintf(":%d", nd.port)) {
					victim = nd
				}
			}
			t.Logf("killing nats node on port %d after %d studies", victim.port, i)
			victim.kill()
		}
		if err := ingest.PublishStudyComplete(pubCtx, ct2Study(t, data, "DPERSONA", uid(i))); err != nil {
			t.Fatalf("publish study %d: %v", i, err)
		}
	}
	segs := 0
	for i := 0; i < n; i++ {
		st := waitState(t, ingest, "DPERSONA", uid(i), StateDone, 90*time.Second)
		segs += len(st.Results)
	}
	if segs != 2*n {
		t.Fatalf("%d SEG results for %d studies, want %d", segs, n, 2*n)
	}
	if got := len(orthancSEGs(t, orthanc)); got != 2*n {
		t.Fatalf("Orthanc holds %d SEG objects, want %d", got, 2*n)
	}
	for i := 0; i < n; i++ {
		if c := proc.Calls(uid(i)); c < 1 {
			t.Fatalf("study %s never processed", uid(i))
		}
	}
	t.Logf("processor calls for %d studies: %d (more than one per study means a redelivery after the failover)", n, proc.TotalCalls())
}
