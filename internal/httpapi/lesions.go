package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"dpersona/dispatch"
)

// LesionRequester runs a study's lesion-mode routes again for posted prompts (dispatch.Bus).
type LesionRequester interface {
	RequestLesions(ctx context.Context, calledAE, studyUID string, prompts []dispatch.APIPrompt) (*dispatch.LesionRequest, error)
}

// lesionBody is the JSON of POST /api/studies/{uid}/lesions: one prompt or several.
//
//	{"series_instance_uid": "1.2...", "lesions": [{"sop_instance_uid": "1.3...", "row": 406, "column": 311},
//	                                               {"point_mm": [-91.8, 98.8, -145.0], "label": "Nodule 2"}]}
type lesionBody struct {
	Series  string               `json:"series_instance_uid,omitempty"`
	Lesions []dispatch.APIPrompt `json:"lesions"`
}

// LesionsHandler serves POST /api/studies/{uid}/lesions[?called_ae=AE]: the prompts are checked
// (400 with the reason), the study found (404 unknown, 409 received by several AE titles or not
// processed yet) and its lesion-mode routes run for those lesions only; 202 with the accepted
// prompts and their ids. GET /api/studies/{uid} then lists them with source API and their state.
func LesionsHandler(r LesionRequester) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body lesionBody
		dec := json.NewDecoder(io.LimitReader(req.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			http.Error(w, "lesion request: "+err.Error(), http.StatusBadRequest)
			return
		}
		for i := range body.Lesions {
			if body.Lesions[i].Series == "" {
				body.Lesions[i].Series = body.Series
			}
		}
		res, err := r.RequestLesions(req.Context(), req.URL.Query().Get("called_ae"), req.PathValue("uid"), body.Lesions)
		switch {
		case errors.Is(err, dispatch.ErrBadLesionRequest):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case errors.Is(err, dispatch.ErrUnknownStudy):
			http.Error(w, err.Error(), http.StatusNotFound)
		case errors.Is(err, dispatch.ErrAmbiguousStudy), errors.Is(err, dispatch.ErrStudyNotReady):
			http.Error(w, err.Error(), http.StatusConflict)
		case err != nil:
			http.Error(w, fmt.Sprintf("lesion request: %v", err), http.StatusServiceUnavailable)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			json.NewEncoder(w).Encode(res)
		}
	})
}
