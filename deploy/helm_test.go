package deploy

import (
	"strings"
	"testing"
)

// Helm: the values for the NATS chart.

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
