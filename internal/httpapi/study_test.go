package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestGetOneStudy(t *testing.T) {
	api := New(StudySourceFunc(func(context.Context) ([]Study, error) {
		return []Study{
			{StudyInstanceUID: "1.2.3", CalledAE: "DPERSONA", State: "complete", Instances: 7},
			{StudyInstanceUID: "1.2.4", CalledAE: "DPERSONA", State: "receiving", Instances: 2},
			{StudyInstanceUID: "1.2.4", CalledAE: "RESEARCH", State: "complete", Instances: 3},
		}, nil
	}), nil)
	api.AddOverlay(OverlayFunc(func(_ context.Context, s []Study) ([]Study, error) {
		for i := range s {
			if s[i].StudyInstanceUID == "1.2.3" {
				s[i].State = "done"
			}
		}
		return s, nil
	}))
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := get("/api/studies/1.2.3")
	var s map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil {
		t.Fatalf("GET one study: %d %s", code, body)
	}
	if s["study_instance_uid"] != "1.2.3" || s["state"] != "done" || s["instances"] != float64(7) {
		t.Fatalf("study = %v: want the overlaid state done and 7 instances", s)
	}
	if code, _ := get("/api/studies/9.9.9"); code != http.StatusNotFound {
		t.Fatalf("unknown study: %d, want 404", code)
	}
	if code, body := get("/api/studies/1.2.4"); code != http.StatusConflict || !strings.Contains(body, "RESEARCH") {
		t.Fatalf("study under two AE titles: %d %s, want 409 naming them", code, body)
	}
	code, body = get("/api/studies/1.2.4?called_ae=RESEARCH")
	if code != 200 || !strings.Contains(body, `"instances": 3`) {
		t.Fatalf("study picked by called_ae: %d %s", code, body)
	}
}
