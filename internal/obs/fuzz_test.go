package obs

import (
	"bytes"
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
