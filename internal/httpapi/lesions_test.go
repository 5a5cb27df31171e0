package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"dpersona/dispatch"
)

type fakeRequester struct {
	gotAE, gotUID string
	got           []dispatch.APIPrompt
	err           error
}

func (f *fakeRequester) RequestLesions(_ context.Context, ae, uid string, p []dispatch.APIPrompt) (*dispatch.LesionRequest, error) {
	f.gotAE, f.gotUID, f.got = ae, uid, p
	if f.err != nil {
		return nil, f.err
	}
	return &dispatch.LesionRequest{StudyInstanceUID: uid, CalledAE: "DPERSONA", EventID: "lesions.x", Prompts: p}, nil
}

// POST /api/studies/{uid}/lesions: the body's series applies to every lesion that names none,
// unknown fields are refused, and each failure of the request maps to its HTTP status.
func TestLesionsHandler(t *testing.T) {
	f := &fakeRequester{}
	mux := http.NewServeMux()
	mux.Handle("POST /api/studies/{uid}/lesions", LesionsHandler(f))
	post := func(body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/studies/1.2.3/lesions?called_ae=AE1", strings.NewReader(body)))
		return rec
	}
	rec := post(`{"series_instance_uid": "1.9", "lesions": [{"sop_instance_uid": "1.2.3.4", "row": 406, "column": 311}, {"point_mm": [1, 2, 3], "series_instance_uid": "1.8"}]}`)
	if rec.Code != http.StatusAccepted || f.gotUID != "1.2.3" || f.gotAE != "AE1" || len(f.got) != 2 || f.got[0].Series != "1.9" || f.got[1].Series != "1.8" || *f.got[0].Row != 406 {
		t.Fatalf("accepted: %d %s; got %+v", rec.Code, rec.Body, f)
	}
	var res dispatch.LesionRequest
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || res.EventID != "lesions.x" {
		t.Fatalf("response %s: %v", rec.Body, err)
	}
	if rec := post(`{"lesions": [{"sop": "x"}]}`); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "unknown field") {
		t.Errorf("unknown field: %d %s", rec.Code, rec.Body)
	}
	for _, c := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("%w: prompt 1: no coordinates", dispatch.ErrBadLesionRequest), http.StatusBadRequest},
		{fmt.Errorf("%w: 1.2.3", dispatch.ErrUnknownStudy), http.StatusNotFound},
		{dispatch.ErrAmbiguousStudy, http.StatusConflict},
		{dispatch.ErrStudyNotReady, http.StatusConflict},
		{fmt.Errorf("nats: timeout"), http.StatusServiceUnavailable},
	} {
		f.err = c.err
		if rec := post(`{"lesions": [{"point_mm": [1, 2, 3]}]}`); rec.Code != c.code || !strings.Contains(rec.Body.String(), c.err.Error()) {
			t.Errorf("%v: %d %s, want %d", c.err, rec.Code, rec.Body, c.code)
		}
	}
}
