package obs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// patient is a type that logs itself through LogValue, the way a careless struct might.
type patient struct{ name, id string }

func (p patient) LogValue() slog.Value {
	return slog.GroupValue(slog.String("PatientName", p.name), slog.String("uid", p.id))
}

// Distinctive values that must never reach the output.
const (
	secretName  = "Zyxwvut^Quennell"
	secretID    = "MRN-9182736455"
	secretBirth = "19230417"
)

func decodeLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func TestRedactionMasksPatientIdentifiers(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, slog.LevelDebug)

	log.Info("keyword keys", "PatientName", secretName, "PatientID", secretID, "PatientBirthDate", secretBirth,
		"study_uid", "1.2.3.4", "instances", 12)
	log.Info("snake and kebab", "patient_name", secretName, "patient-id", secretID, "other_patient_ids", secretID)
	log.Info("tags", "(0010,0010)", secretName, "0010,0020", secretID, "00100030", secretBirth, "0x00101000", secretID)
	log.Info("generic", "name", secretName, "dob", secretBirth, "mrn", secretID)
	log.With("PatientName", secretName).Info("bound with With")
	log.Info("nested group", slog.Group("study", slog.String("uid", "1.2.3"), slog.Group("who", slog.String("PatientID", secretID))))
	log.WithGroup("patient").Info("sensitive group", "given", secretName, "birth", secretBirth)
	log.Info("sensitive group attr", slog.Group("Patient", slog.String("n", secretName)))
	log.Info("log valuer", "subject", patient{name: secretName, id: "1.2.3"})
	log.Info("any value", "PatientName", struct{ A string }{secretName})

	out := buf.String()
	for _, s := range []string{secretName, secretID, secretBirth, "Zyxwvut", "Quennell", "9182736455"} {
		if strings.Contains(out, s) {
			t.Errorf("patient identifier %q leaked into the log:\n%s", s, out)
		}
	}
	lines := decodeLines(t, &buf)
	if len(lines) != 10 {
		t.Fatalf("%d log lines, want 10:\n%s", len(lines), out)
	}
	first := lines[0]
	if first["PatientName"] != RedactedValue || first["PatientID"] != RedactedValue {
		t.Errorf("keys must stay with a masked value: %v", first)
	}
	if first["study_uid"] != "1.2.3.4" || first["instances"] != float64(12) {
		t.Errorf("non-sensitive attributes must pass unchanged: %v", first)
	}
	study := lines[5]["study"].(map[string]any)
	if study["uid"] != "1.2.3" {
		t.Errorf("non-sensitive attribute in a group was changed: %v", study)
	}
	// The LogValuer resolved into a group: the uid inside survives, the name is masked.
	subject := lines[8]["subject"].(map[string]any)
	if subject["uid"] != "1.2.3" || subject["PatientName"] != RedactedValue {
		t.Errorf("LogValuer: %v", subject)
	}
}

func TestIsSensitiveKey(t *testing.T) {
	yes := []string{"PatientName", "patientname", "PATIENT_ID", "patient.birth_date", "OtherPatientIDs",
		"PatientBirthDate", "(0010,0010)", "(0010,1000)", "0010,0040", "0x00102154", "ReferringPhysicianName",
		"AccessionNumber", "patient", "dob", "name"}
	no := []string{"StudyInstanceUID", "study_uid", "SeriesInstanceUID", "calling_ae", "instances",
		"(0020,000D)", "0008,0018", "modality", "bytes", "error", "correlation_id", "", "(0010)"}
	for _, k := range yes {
		if !IsSensitiveKey(k) {
			t.Errorf("IsSensitiveKey(%q) = false, want true", k)
		}
	}
	for _, k := range no {
		if IsSensitiveKey(k) {
			t.Errorf("IsSensitiveKey(%q) = true, want false", k)
		}
	}
}

func TestCorrelationIDFromContextAndWith(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, slog.LevelInfo)
	id := NewCorrelationID()
	if len(id) != 16 || id == NewCorrelationID() {
		t.Fatalf("correlation ids must be 16 hex digits and unique, got %q", id)
	}
	ctx := WithCorrelation(context.Background(), id)
	if CorrelationID(ctx) != id || CorrelationID(context.Background()) != "" {
		t.Fatal("CorrelationID does not return what WithCorrelation stored")
	}
	log.InfoContext(ctx, "association accepted", "calling_ae", "STORESCU")
	log.With(Correlation("study-77")).Info("study complete")
	log.Info("no id")
	log.DebugContext(ctx, "below the level") // filtered: Enabled must be honoured

	lines := decodeLines(t, &buf)
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3: %s", len(lines), buf.String())
	}
	if lines[0][CorrelationKey] != id || lines[0]["calling_ae"] != "STORESCU" {
		t.Errorf("context id missing: %v", lines[0])
	}
	if lines[1][CorrelationKey] != "study-77" {
		t.Errorf("bound id missing: %v", lines[1])
	}
	if _, ok := lines[2][CorrelationKey]; ok {
		t.Errorf("a record without id got one: %v", lines[2])
	}
}

func TestParseLevel(t *testing.T) {
	for s, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := ParseLevel(s); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Errorf("ParseLevel(loud) error %v must name the value", err)
	}
}

// failingHandler checks that errors of the wrapped handler are passed on.
type failingHandler struct{ slog.Handler }

func (failingHandler) Handle(context.Context, slog.Record) error { return errors.New("disk full") }

func TestRedactingHandlerPassesErrors(t *testing.T) {
	h := NewRedactingHandler(failingHandler{slog.NewJSONHandler(&bytes.Buffer{}, nil)})
	if err := h.Handle(context.Background(), slog.NewRecord(timeZero, slog.LevelInfo, "x", 0)); err == nil {
		t.Error("error of the wrapped handler was swallowed")
	}
}

func TestStudyCorrelationID(t *testing.T) {
	a := StudyCorrelationID("DPERSONA", "1.2.3.4")
	if a != StudyCorrelationID("DPERSONA", "1.2.3.4") {
		t.Error("the same study must get the same id in every process")
	}
	if a == StudyCorrelationID("OTHER", "1.2.3.4") || a == StudyCorrelationID("DPERSONA", "1.2.3.5") ||
		StudyCorrelationID("DPERSONA1", "2.3") == StudyCorrelationID("DPERSONA", "12.3") {
		t.Error("different (AE, study) pairs must get different ids")
	}
	if !strings.HasPrefix(a, "s-") || len(a) != 18 || strings.Contains(a, "1.2.3.4") {
		t.Errorf("id %q: want s- and 16 hex digits, not the UID itself", a)
	}
}
