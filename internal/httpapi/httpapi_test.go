package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestListStudiesWithOverlays(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Minute)
	src := StudySourceFunc(func(ctx context.Context) ([]Study, error) {
		return []Study{
			{StudyInstanceUID: "1.2.1", CalledAE: "DPERSONA", State: "complete", Instances: 3, Series: []Series{{SeriesInstanceUID: "1.2.1.1", Modality: "CT", Instances: 3}}, LastReceivedAt: &t1},
			{StudyInstanceUID: "1.2.2", CalledAE: "DPERSONA", State: "receiving", Instances: 1, Series: []Series{{SeriesInstanceUID: "1.2.2.1", Modality: "MR", Instances: 1}}, LastReceivedAt: &t2},
		}, nil
	})
	api := New(src, nil)
	api.AddOverlay(OverlayFunc(func(ctx context.Context, s []Study) ([]Study, error) {
		for i := range s {
			if s[i].StudyInstanceUID == "1.2.1" {
				s[i].State = "inferring"
				s[i].Worker = "w1"
			}
		}
		return s, nil
	}))
	api.AddOverlay(OverlayFunc(func(ctx context.Context, s []Study) ([]Study, error) { return nil, errors.New("bus down") }))
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()

	get := func(q string) []map[string]any {
		resp, err := http.Get(srv.URL + "/api/studies" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, type %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var out []map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	all := get("")
	if len(all) != 2 || all[0]["study_instance_uid"] != "1.2.2" {
		t.Fatalf("want 2 studies, newest first: %v", all)
	}
	if all[1]["state"] != "inferring" || all[1]["worker"] != "w1" {
		t.Fatalf("overlay not applied: %v", all[1])
	}
	series := all[0]["series"].([]any)[0].(map[string]any)
	if series["modality"] != "MR" || series["instances"].(float64) != 1 || all[0]["instances"].(float64) != 1 {
		t.Fatalf("series summary: %v", all[0])
	}
	if got := get("?state=receiving"); len(got) != 1 || got[0]["study_instance_uid"] != "1.2.2" {
		t.Fatalf("state filter: %v", got)
	}
	resp, _ := http.Post(srv.URL+"/api/studies", "application/json", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST answered %d", resp.StatusCode)
	}
}

func TestEmptyListIsArray(t *testing.T) {
	api := New(StudySourceFunc(func(context.Context) ([]Study, error) { return nil, nil }), nil)
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/studies", nil))
	if body := rec.Body.String(); body != "[]\n" {
		t.Fatalf("empty list: %q", body)
	}
}
