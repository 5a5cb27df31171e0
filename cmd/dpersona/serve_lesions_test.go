package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/dicomio"
	"dpersona/internal/testutil"
)

type lesionView struct {
	Source, Object, Item, Label, State, Reason string
	TrackingID                                 string `json:"tracking_id"`
	TrackingUID                                string `json:"tracking_uid"`
	Slice, Row, Column                         int
}

func studyLesions(t *testing.T, httpPort int, study string) (state string, lesions []lesionView) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/studies/%s", httpPort, study))
	if err != nil {
		return "", nil
	}
	defer resp.Body.Close()
	var s struct {
		State   string       `json:"state"`
		Lesions []lesionView `json:"lesions"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&s) != nil {
		return "", nil
	}
	return s.State, s.Lesions
}

// Lesion mode through the real binary: storescu sends the CT and then the measurement SR to
// `dpersona serve` with a lesion route; the SEGs reach Orthanc over C-STORE carrying the SR's
// tracking UID; GET /api/studies/{uid} lists the lesion (source SR); POST .../lesions adds a
// lesion by pixel, which runs alone and is listed with source API; a bad POST names the cause.
func TestServeLesionModeSRThenAPI(t *testing.T) {
	lib := ortLibrary(t)
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	cfg := filepath.Join(t.TempDir(), "serve.json")
	os.WriteFile(cfg, []byte(`{"routes": [{"name": "lesions", "modality": "CT", "outputs": ["raters"],
	  "lesions": {"wait_for_prompts": "5m"}}]}`), 0o644)
	p := startServe(t, t.TempDir(), "--config", cfg, "--quiet-window", "300ms", "--ort-lib", lib,
		"--model", filepath.Join(testutil.RepoRoot(), "inference", "testdata", "tiny"),
		"--forward-to", fmt.Sprintf("%s@127.0.0.1:%d", orthanc.AET, orthanc.DICOMPort))
	study, _ := sendStudy(t, p.dicomAddr(), "DPERSONA", "lidc-ct-0005")
	waitStudyState(t, p.httpPort, study, 60*time.Second, "waiting")

	sr := testutil.Testdata("dicom", "prompts", "lidc-ct-0005-length-sr.dcm")
	host, port, _ := strings.Cut(p.dicomAddr(), ":")
	if out, err := exec.Command(testutil.RequireTool(t, "storescu"), "-R", "-aet", "VIEWER", "-aec", "DPERSONA", host, port, sr).CombinedOutput(); err != nil {
		t.Fatalf("storescu SR: %v\n%s", err, out)
	}
	obj, err := dicomio.ReadPrompts(sr)
	if err != nil {
		t.Fatal(err)
	}
	var lesions []lesionView
	testutil.WaitFor(t, 60*time.Second, "the SR's lesion processed and delivered", func() bool {
		var state string
		state, lesions = studyLesions(t, p.httpPort, study)
		return state == "done" && len(lesions) == 1
	})
	if l := lesions[0]; l.Source != "SR" || l.State != "processed" || l.TrackingUID != obj.Prompts[0].TrackingUID || l.Slice != 4 {
		t.Fatalf("lesion %+v", l)
	}
	segs := orthancSEGs(t, orthanc)
	if len(segs) != 1 || segs[0].StudyInstanceUID != study {
		t.Fatalf("Orthanc SEGs %+v", segs)
	}
	var tags map[string]any
	ids, _ := orthanc.Instances()
	for _, id := range ids {
		var m map[string]any
		orthanc.GetJSON("/instances/"+id+"/simplified-tags", &m)
		if m["Modality"] == "SEG" {
			tags = m
		}
	}
	seq, _ := tags["SegmentSequence"].([]any)
	if len(seq) != 4 {
		t.Fatalf("SEG at Orthanc has %d segments, want 4 rater styles", len(seq))
	}
	for _, it := range seq {
		if s := it.(map[string]any); s["TrackingUID"] != obj.Prompts[0].TrackingUID || s["TrackingID"] != "Nodule 1" {
			t.Fatalf("segment at Orthanc: %v", s)
		}
	}

	// A lesion posted by pixel on the lowest slice (the second nodule).
	src, err := dicomio.LoadSeries(mustSeriesFiles(t, testutil.Testdata("dicom", "lidc-ct-0005")))
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) (int, string) {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/api/studies/%s/lesions", p.httpPort, study), "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(fmt.Sprintf(`{"lesions": [{"sop_instance_uid": %q, "row": 396, "column": 125, "label": "Nodule 2"}]}`, src.Slices[0].SOPInstanceUID)); code != http.StatusAccepted {
		t.Fatalf("POST lesions: %d %s", code, body)
	}
	testutil.WaitFor(t, 60*time.Second, "the API lesion listed", func() bool {
		var state string
		state, lesions = studyLesions(t, p.httpPort, study)
		return state == "done" && len(lesions) == 2
	})
	if l := lesions[1]; l.Source != "API" || l.Slice != 1 || l.Row != 396 || l.Column != 125 || l.State != "processed" {
		t.Fatalf("API lesion %+v", l)
	}
	if code, body := post(`{"lesions": [{"row": 1}]}`); code != http.StatusBadRequest || !strings.Contains(body, "sop_instance_uid") {
		t.Errorf("bad POST: %d %s", code, body)
	}
	if code, body := post(`{"lesions": [{"point_mm": [1, 2]}]}`); code != http.StatusBadRequest || !strings.Contains(body, "want 3") {
		t.Errorf("bad POST: %d %s", code, body)
	}
}
