package obs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// CorrelationKey is the log attribute that carries the correlation id of an association or study.
const CorrelationKey = "correlation_id"

// RedactedValue replaces the value of an attribute whose key names a patient identifier.
const RedactedValue = "[REDACTED]"

type correlationCtxKey struct{}

// WithCorrelation returns a context carrying a correlation id. Loggers built by NewLogger add it
// to every record logged with that context (logger.InfoContext(ctx, ...)).
func WithCorrelation(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationCtxKey{}, id)
}

// CorrelationID returns the correlation id carried by ctx, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationCtxKey{}).(string)
	return id
}

// Correlation is the log attribute for a correlation id, for loggers bound with logger.With.
func Correlation(id string) slog.Attr { return slog.String(CorrelationKey, id) }

// NewCorrelationID returns a random 16-hex-digit id: short enough to grep, unique enough for the
// associations and studies of a gateway's lifetime. Ids carry no patient data by construction.
func NewCorrelationID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("obs: crypto/rand failed: %v", err)) // cannot happen on Linux
	}
	return hex.EncodeToString(b[:])
}

// StudyCorrelationID is the correlation id of a study: derived from (called AE, StudyInstanceUID),
// so that ingest, inference and export, in different processes or on different machines, log the
// same id for the same study without passing it along. A study sent again to the same AE keeps its
// id, which is what an operator following it wants.
func StudyCorrelationID(calledAE, studyInstanceUID string) string {
	h := sha256.Sum256([]byte("study\x00" + calledAE + "\x00" + studyInstanceUID))
	return "s-" + hex.EncodeToString(h[:8])
}

// NewLogger returns the project's logger: JSON lines on w at the given level, with correlation
// ids taken from the context and patient identifiers redacted (see NewRedactingHandler).
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(NewRedactingHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
}

// ParseLevel turns "debug", "info", "warn" or "error" into a level, naming the bad value otherwise.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// sensitiveKeys are normalised (lower case, letters and digits only) attribute keys that name
// patient identifiers or other people: DICOM keywords of the Patient module and the person-name
// attributes outside it, plus the usual spellings in code.
var sensitiveKeys = map[string]bool{}

func init() {
	for _, k := range []string{
		// Group 0010 keywords.
		"PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID", "PatientBirthDate",
		"PatientBirthTime", "PatientSex", "OtherPatientIDs", "OtherPatientNames",
		"OtherPatientIDsSequence", "PatientBirthName", "PatientAge", "PatientSize", "PatientWeight",
		"PatientAddress", "PatientMotherBirthName", "MilitaryRank", "BranchOfService",
		"MedicalRecordLocator", "PatientTelephoneNumbers", "EthnicGroup", "Occupation",
		"PatientComments", "ResponsiblePerson", "ResponsibleOrganization", "CountryOfResidence",
		"RegionOfResidence", "PatientReligiousPreference", "PatientInsurancePlanCodeSequence",
		"MedicalAlerts", "Allergies", "AdditionalPatientHistory", "PregnancyStatus",
		"LastMenstrualDate", "SmokingStatus", "PatientState", "PatientSpeciesDescription",
		// Identifying attributes outside group 0010.
		"AccessionNumber", "ReferringPhysicianName", "PerformingPhysicianName",
		"NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician",
		"PhysiciansOfRecord", "InstitutionName", "InstitutionAddress", "StationName",
		"AdmissionID", "IssuerOfAdmissionID", "DeviceSerialNumber",
		// Common spellings in code.
		"birthdate", "dob", "dateofbirth", "mrn", "ssn", "name", "fullname", "firstname",
		"lastname", "surname", "givenname", "familyname",
	} {
		sensitiveKeys[normaliseKey(k)] = true
	}
}

func normaliseKey(k string) string {
	var b strings.Builder
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r + ('a' - 'A'))
		}
	}
	return b.String()
}

// IsSensitiveKey reports whether a log attribute key names a patient identifier: a known keyword
// (any case, with or without separators: PatientName, patient_name, patient-name), any key that
// starts with "patient", or a tag of the Patient group (0010,xxxx) written as "(0010,0010)",
// "0010,0010", "00100010" or "0x00100010".
func IsSensitiveKey(key string) bool {
	// Normalise into a stack buffer: this runs for every attribute of every log record, and a map
	// lookup with string(bytes) does not allocate.
	var buf [64]byte
	n := buf[:0]
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		default:
			continue
		}
		if len(n) == cap(n) {
			return isSensitiveNormalised(normaliseKey(key)) // a long key: take the slow path
		}
		n = append(n, c)
	}
	return isSensitiveNormalised(string(n))
}

func isSensitiveNormalised(n string) bool {
	if n == "" {
		return false
	}
	if sensitiveKeys[n] || strings.HasPrefix(n, "patient") {
		return true
	}
	n = strings.TrimPrefix(n, "0x")
	return len(n) == 8 && strings.HasPrefix(n, "0010") && isHex(n)
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// NewRedactingHandler wraps next so that a careless log call cannot leak a patient identifier:
// every attribute whose key is sensitive (IsSensitiveKey) keeps its key but has its value replaced
// by RedactedValue, at any depth of groups, in attributes bound with With and in records; a group
// opened with WithGroup under a sensitive name redacts everything logged into it. Values that
// implement slog.LogValuer are resolved first, so a type cannot smuggle identifiers past the check
// through its LogValue. It also adds the correlation id found in the record's context.
//
// It checks keys, not free text: a message built with fmt.Sprintf("... %s", name) is not caught.
// The rule of the project is therefore to log UIDs, AE titles and counts, with the identifiers
// never formatted into messages.
func NewRedactingHandler(next slog.Handler) slog.Handler {
	return &redactingHandler{next: next}
}

type redactingHandler struct {
	next slog.Handler
	// inSensitiveGroup: a group opened with WithGroup has a sensitive name; everything below it is
	// redacted.
	inSensitiveGroup bool
}

func (h *redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a, h.inSensitiveGroup))
		return true
	})
	if id := CorrelationID(ctx); id != "" {
		out.AddAttrs(Correlation(id))
	}
	return h.next.Handle(ctx, out)
}

func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = redactAttr(a, h.inSensitiveGroup)
	}
	return &redactingHandler{next: h.next.WithAttrs(red), inSensitiveGroup: h.inSensitiveGroup}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	return &redactingHandler{
		next:             h.next.WithGroup(name),
		inSensitiveGroup: h.inSensitiveGroup || IsSensitiveKey(name),
	}
}

// redactAttr returns a with sensitive values replaced; all=true redacts every leaf (used inside a
// sensitive group).
func redactAttr(a slog.Attr, all bool) slog.Attr {
	a.Value = a.Value.Resolve()
	sensitive := all || IsSensitiveKey(a.Key)
	if a.Value.Kind() == slog.KindGroup {
		group := a.Value.Group()
		red := make([]slog.Attr, len(group))
		for i, g := range group {
			red[i] = redactAttr(g, sensitive)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(red...)}
	}
	if sensitive {
		return slog.String(a.Key, RedactedValue)
	}
	return a
}
