package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"dpersona/gateway/dimse"
)

// STOWExporter stores files with DICOMweb STOW-RS (PS3.18 10.5): one POST of
// multipart/related; type="application/dicom" to {URL}/studies per job.
type STOWExporter struct {
	URL         string // DICOMweb root, e.g. http://pacs:8042/dicom-web
	BearerToken string
	Client      *http.Client // default: http.DefaultClient (the context bounds each request)
}

// Export implements Exporter.
func (e *STOWExporter) Export(ctx context.Context, files []ExportFile) ([]FileStatus, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, f := range files {
		part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/dicom"}})
		if err != nil {
			return nil, err
		}
		part.Write(f.Data)
	}
	mw.Close()
	url := strings.TrimRight(e.URL, "/") + "/studies"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &body)
	if err != nil {
		return nil, Permanentf("STOW-RS %s: %w", url, err)
	}
	req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=`+mw.Boundary())
	req.Header.Set("Accept", "application/dicom+json")
	if e.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+e.BearerToken)
	}
	client := e.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("STOW-RS %s: %w", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	status := "HTTP " + strconv.Itoa(resp.StatusCode)
	if resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return nil, fmt.Errorf("STOW-RS %s: %s: %s", url, resp.Status, snippet(raw))
	}
	// 200 (all stored), 202 (some failed), 409 and 400 (some or all failed) carry per-instance
	// verdicts in the response dataset; a file listed as stored is stored whatever the HTTP status
	// (Orthanc answers 400 to a request with one unreadable part and still stores the others).
	stored, failed, perr := parseSTOWResponse(raw)
	out := make([]FileStatus, len(files))
	for i, f := range files {
		code, isFailed := failed[f.SOPInstanceUID]
		switch {
		case stored[f.SOPInstanceUID]:
			out[i] = FileStatus{Status: status}
		case isFailed:
			err := fmt.Errorf("STOW-RS %s refused %s with failure reason 0x%04X", url, f.SOPInstanceUID, code)
			if code < 0 || code > 0xFFFF || !dimse.Status(code).Transient() { // FailureReason holds a DIMSE status (PS3.18)
				err = Permanent(err)
			}
			out[i] = FileStatus{Status: fmt.Sprintf("%s, 0x%04X", status, code), Err: err}
		case resp.StatusCode == http.StatusOK && (perr != nil || len(stored) == 0):
			// A 200 without a per-instance list means everything was stored.
			out[i] = FileStatus{Status: status}
		case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted:
			out[i] = FileStatus{Status: status, Err: fmt.Errorf("STOW-RS %s: %s does not mention %s", url, resp.Status, f.SOPInstanceUID)}
		default:
			// 400 (bad request), 401/403 (not allowed), 404 (no DICOMweb there), 409, 413, 415:
			// sending the same file again cannot succeed.
			out[i] = FileStatus{Status: status, Err: Permanentf("STOW-RS %s: %s for %s: %s", url, resp.Status, f.SOPInstanceUID, snippet(raw))}
		}
	}
	return out, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// parseSTOWResponse reads the DICOM JSON response: ReferencedSOPSequence (0008,1199) lists stored
// instances, FailedSOPSequence (0008,1198) the refused ones with FailureReason (0008,1197).
func parseSTOWResponse(raw []byte) (stored map[string]bool, failed map[string]int, err error) {
	stored, failed = map[string]bool{}, map[string]int{}
	if len(bytes.TrimSpace(raw)) == 0 {
		return stored, failed, fmt.Errorf("empty response")
	}
	type attr struct {
		VR    string            `json:"vr"`
		Value []json.RawMessage `json:"Value"`
	}
	var ds map[string]attr
	if err := json.Unmarshal(raw, &ds); err != nil {
		// Some servers answer with an array of one dataset.
		var arr []map[string]attr
		if err2 := json.Unmarshal(raw, &arr); err2 != nil || len(arr) == 0 {
			return stored, failed, err
		}
		ds = arr[0]
	}
	items := func(tag string) []map[string]attr {
		var out []map[string]attr
		for _, v := range ds[tag].Value {
			var item map[string]attr
			if json.Unmarshal(v, &item) == nil {
				out = append(out, item)
			}
		}
		return out
	}
	str := func(item map[string]attr, tag string) string {
		if a, ok := item[tag]; ok && len(a.Value) > 0 {
			var s string
			if json.Unmarshal(a.Value[0], &s) == nil {
				return s
			}
		}
		return ""
	}
	for _, it := range items("00081199") {
		if uid := str(it, "00081155"); uid != "" {
			stored[uid] = true
		}
	}
	for _, it := range items("00081198") {
		uid := str(it, "00081155")
		code := 0xC000
		if a, ok := it["00081197"]; ok && len(a.Value) > 0 {
			var n int
			if json.Unmarshal(a.Value[0], &n) == nil {
				code = n
			}
		}
		if uid != "" {
			failed[uid] = code
		}
	}
	return stored, failed, nil
}
