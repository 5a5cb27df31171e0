package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// readyz returns /readyz's status code and the names of the failing checks ("" when it does not
// answer).
func readyzFailing(httpPort int) (int, string) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var rep struct {
		Checks []struct {
			Name string `json:"name"`
			OK   bool   `json:"ok"`
		} `json:"checks"`
	}
	json.NewDecoder(resp.Body).Decode(&rep)
	var failing []string
	for _, c := range rep.Checks {
		if !c.OK {
			failing = append(failing, c.Name)
		}
	}
	return resp.StatusCode, strings.Join(failing, ",")
}

// Disk full and back with the real binary (issue 14 item 1), its data directory on a 48 MB tmpfs:
// a study is acknowledged, the disk fills before the study completes, so the bus cannot store its
// event; /readyz reports "nats" not ready meanwhile. Once space is freed the process recovers by
// itself (no restart): /readyz is ready again and the study reaches the bus. Before, JetStream
// kept failing with "no space left on device" until a restart while /readyz said ready.
func TestServeRecoversFromFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the gateway")
	}
	testutil.RunInSmallTmpfs(t, "48m", "TestServeFullDiskHelper", 4*time.Minute)
}

func TestServeFullDiskHelper(t *testing.T) {
	data := testutil.SmallTmpfs(t, 49<<20)
	cfg := writeConfig(t, `{"min_free_mb": 1, "shutdown_timeout": "5s"}`)
	p := startServe(t, data, "--roles", "ingest", "--config", cfg, "--quiet-window", "2s")
	if code, failing := readyzFailing(p.httpPort); code != http.StatusOK {
		t.Fatalf("/readyz %d (%s) before the disk filled", code, failing)
	}
	study, _ := sendStudy(t, p.dicomAddr(), "DPERSONA", "lidc-ct-0004")
	filler := filepath.Join(data, "filler")
	n := testutil.FillDisk(t, filler)
	t.Logf("disk filled with %d MB after the study was acknowledged", n>>20)
	testutil.WaitFor(t, 30*time.Second, "/readyz to report nats not ready while the disk is full", func() bool {
		code, failing := readyzFailing(p.httpPort)
		return code == http.StatusServiceUnavailable && strings.Contains(failing, "nats")
	})
	time.Sleep(3 * time.Second) // the quiet window passes: the study's hand-off to the bus fails
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	testutil.WaitFor(t, 60*time.Second, "/readyz ready again after space returned", func() bool {
		code, _ := readyzFailing(p.httpPort)
		return code == http.StatusOK
	})
	// The study's event and state are in the bus: handed off, with the bus's event id.
	testutil.WaitFor(t, 90*time.Second, "the study to reach the bus after space returned", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/studies", p.httpPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var studies []struct {
			StudyInstanceUID string `json:"study_instance_uid"`
			HandedOff        *bool  `json:"handed_off"`
			EventID          string `json:"event_id"`
		}
		json.NewDecoder(resp.Body).Decode(&studies)
		for _, s := range studies {
			if s.StudyInstanceUID == study && s.HandedOff != nil && *s.HandedOff && s.EventID != "" {
				return true
			}
		}
		return false
	})
	t.Logf("ready again and study %s in the bus %v after space returned", study, time.Since(freed).Round(100*time.Millisecond))
}
