package obs

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzLabelRoundTrip: whatever a label value or HELP text holds (quotes, backslashes, newlines),
// the exposition parses and gives back exactly what was written.
func FuzzLabelRoundTrip(f *testing.F) {
	for _, s := range []string{"", "PACS@10.0.0.5:104", `a"b`, `a\b`, "a\nb", `\n`, `\"`, `\\"\n"`, "ünï", "}", "{a=\"b\"}"} {
		f.Add(s, s, 1.5)
	}
	f.Fuzz(func(t *testing.T, label, help string, v float64) {
		if !utf8.ValidString(label) || !utf8.ValidString(help) {
			t.Skip() // the format is UTF-8 text
		}
		r := NewRegistry()
		r.NewGaugeVec("fuzz_gauge", help, "l").With(label).Set(v)
		var buf bytes.Buffer
		if err := r.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		exp, err := ParseText(&buf)
		if err != nil {
			t.Fatalf("own output does not parse: %v\n%s", err, buf.String())
		}
		got, ok := exp.Value("fuzz_gauge", map[string]string{"l": label})
		if !ok || !(got == v || (got != got && v != v)) {
			t.Fatalf("value for label %q: %v (present %v), want %v", label, got, ok, v)
		}
		if h := exp.Families["fuzz_gauge"].Help; h != help {
			t.Fatalf("HELP %q came back as %q", help, h)
		}
	})
}

// FuzzParseText: arbitrary input is rejected with an error or parsed, never a panic.
func FuzzParseText(f *testing.F) {
	r := NewRegistry()
	r.NewHistogramVec("seed_seconds", "Seed.", []float64{0.1, 1}, "stage").With("infer").Observe(0.5)
	r.NewCounterVec("seed_total", "Seed \\ help.", "reason").With("a\"b").Inc()
	var buf bytes.Buffer
	_ = r.WriteText(&buf)
	f.Add(buf.String())
	f.Add("# TYPE x counter\nx{a=\"\\\\\"} 1 123\n")
	f.Add("x{")
	f.Fuzz(func(t *testing.T, text string) {
		_, _ = ParseText(strings.NewReader(text))
	})
}

// FuzzRedaction: for any key the guard calls sensitive, the output does not depend on the value
// at all (logged alone, inside a group, bound with With, or under a sensitive group name), so no
// part of it can leak.
func FuzzRedaction(f *testing.F) {
	for _, k := range []string{"PatientName", "patient_id", "(0010,0030)", "0x00101000", "dob", "study_uid", "Name", "PATIENT"} {
		f.Add(k, "Zyxwvut^Quennell")
	}
	render := func(key, value string) string {
		var buf bytes.Buffer
		noTime := func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
		log := slog.New(NewRedactingHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: noTime})))
		log.Info("m", key, value)
		log.Info("m", slog.Group("g", slog.String(key, value)))
		log.With(key, value).Info("m")
		log.WithGroup(key).Info("m", "x", value)
		return buf.String()
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		if !IsSensitiveKey(key) {
			if key == "PatientName" {
				t.Fatal("PatientName is not sensitive")
			}
			t.Skip()
		}
		if got, ref := render(key, value), render(key, "-"); got != ref {
			t.Fatalf("the output for sensitive key %q depends on its value %q:\n%s\nvs\n%s", key, value, got, ref)
		}
	})
}
