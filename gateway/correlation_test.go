package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"dpersona/internal/obs"
	"dpersona/internal/testutil"
)

// Every log line about an association carries that association's correlation id (one per
// association, different between associations); study lines carry the study's derived id.
func TestLogCorrelationIDs(t *testing.T) {
	testutil.RequireTool(t, "storescu")
	g := startGateway(t, gatewayOptions{})
	files := dicomFiles(t, testutil.Testdata("dicom", "ct2-pydicom"))
	for i := 0; i < 2; i++ {
		if out, err := runTool(t, 30*time.Second, "storescu", append([]string{"-R", "-aet", "MODALITY", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port)}, files...)...); err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "study handed off and logged", func() bool {
		return len(g.sink.completed()) > 0 && strings.Contains(g.logs.String(), `"msg":"study handed off"`)
	})
	studyUID := g.sink.completed()[0].StudyInstanceUID
	wantStudyID := obs.StudyCorrelationID("DPERSONA", studyUID)

	assocIDs := map[string]int{}
	studyLines := 0
	for _, line := range strings.Split(strings.TrimSpace(g.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		id, _ := rec[obs.CorrelationKey].(string)
		msg, _ := rec["msg"].(string)
		switch {
		case strings.HasPrefix(msg, "association") || strings.HasPrefix(msg, "instance"):
			if id == "" || strings.HasPrefix(id, "s-") {
				t.Errorf("association line without an association correlation id: %s", line)
			}
			assocIDs[id]++
		case strings.HasPrefix(msg, "study"):
			if id != wantStudyID {
				t.Errorf("study line has correlation id %q, want %q: %s", id, wantStudyID, line)
			}
			studyLines++
		}
	}
	// Two associations, each logging "accepted", "instance stored" x4 (debug) and "released".
	if len(assocIDs) != 2 {
		t.Fatalf("want 2 association correlation ids, got %v", assocIDs)
	}
	for id, n := range assocIDs {
		if n != 2+len(files) {
			t.Errorf("association %s logged %d lines, want %d", id, n, 2+len(files))
		}
	}
	if studyLines < 3 { // receiving, complete, handed off
		t.Fatalf("only %d study lines logged:\n%s", studyLines, g.logs.String())
	}
}
