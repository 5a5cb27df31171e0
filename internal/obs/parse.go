package obs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Sample is one line of a text exposition: a series name, its labels and its value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Family is what a text exposition says about one metric name.
type Family struct {
	Name, Help, Type string
	Samples          []Sample
}

// Exposition is a parsed /metrics body.
type Exposition struct {
	Families map[string]*Family
}

// ParseText parses the Prometheus text format 0.0.4 strictly: every sample must belong to a
// family announced by a TYPE line (for histograms, via the _bucket, _sum and _count suffixes),
// label values must be properly quoted and escaped, values must be floats. The tests use it to
// check the writer (`dpersona status` reads the typed Summary from /api/status instead).
func ParseText(r io.Reader) (*Exposition, error) {
	exp := &Exposition{Families: map[string]*Family{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	sc.Split(splitLF) // lines end in \n only; a \r is content (bufio.ScanLines would drop it)
	lineNo := 0
	fam := func(name string) *Family {
		f := exp.Families[name]
		if f == nil {
			f = &Family{Name: name}
			exp.Families[name] = f
		}
		return f
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			fields := strings.SplitN(line, " ", 4)
			if len(fields) < 3 || (fields[1] != "HELP" && fields[1] != "TYPE") {
				continue // a plain comment
			}
			name := fields[2]
			if !metricNameRE.MatchString(name) {
				return nil, fmt.Errorf("metrics line %d: invalid metric name %q", lineNo, name)
			}
			rest := ""
			if len(fields) == 4 {
				rest = fields[3]
			}
			f := fam(name)
			if fields[1] == "HELP" {
				help, err := unescape(rest, false)
				if err != nil {
					return nil, fmt.Errorf("metrics line %d: HELP of %s: %v", lineNo, name, err)
				}
				f.Help = help
				continue
			}
			switch rest {
			case "counter", "gauge", "histogram", "summary", "untyped":
			default:
				return nil, fmt.Errorf("metrics line %d: unknown TYPE %q for %s", lineNo, rest, name)
			}
			if f.Type != "" {
				return nil, fmt.Errorf("metrics line %d: second TYPE line for %s", lineNo, name)
			}
			if len(f.Samples) > 0 {
				return nil, fmt.Errorf("metrics line %d: TYPE of %s after its samples", lineNo, name)
			}
			f.Type = rest
			continue
		}
		s, err := parseSampleLine(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %v", lineNo, err)
		}
		owner := exp.owner(s.Name)
		if owner == nil {
			return nil, fmt.Errorf("metrics line %d: sample %s has no TYPE line", lineNo, s.Name)
		}
		owner.Samples = append(owner.Samples, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	return exp, nil
}

func splitLF(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// owner finds the family a sample name belongs to.
func (e *Exposition) owner(name string) *Family {
	if f := e.Families[name]; f != nil && f.Type != "" {
		return f
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if f := e.Families[base]; f != nil && (f.Type == "histogram" || f.Type == "summary") {
				return f
			}
		}
	}
	return nil
}

func parseSampleLine(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	i := 0
	for i < len(line) && line[i] != '{' && line[i] != ' ' {
		i++
	}
	s.Name = line[:i]
	if !metricNameRE.MatchString(s.Name) {
		return s, fmt.Errorf("invalid metric name %q", s.Name)
	}
	if i < len(line) && line[i] == '{' {
		i++
		for {
			if i < len(line) && line[i] == '}' {
				i++
				break
			}
			j := i
			for j < len(line) && line[j] != '=' {
				j++
			}
			ln := strings.TrimSpace(line[i:j])
			if !labelNameRE.MatchString(ln) {
				return s, fmt.Errorf("%s: invalid label name %q", s.Name, ln)
			}
			if j+1 >= len(line) || line[j+1] != '"' {
				return s, fmt.Errorf("%s: label %s: value is not quoted", s.Name, ln)
			}
			k := j + 2
			var raw strings.Builder
			closed := false
			for k < len(line) {
				c := line[k]
				if c == '\\' && k+1 < len(line) {
					raw.WriteByte(c)
					raw.WriteByte(line[k+1])
					k += 2
					continue
				}
				if c == '"' {
					closed = true
					k++
					break
				}
				raw.WriteByte(c)
				k++
			}
			if !closed {
				return s, fmt.Errorf("%s: label %s: unterminated value", s.Name, ln)
			}
			v, err := unescape(raw.String(), true)
			if err != nil {
				return s, fmt.Errorf("%s: label %s: %v", s.Name, ln, err)
			}
			if _, dup := s.Labels[ln]; dup {
				return s, fmt.Errorf("%s: label %s twice", s.Name, ln)
			}
			s.Labels[ln] = v
			i = k
			if i < len(line) && line[i] == ',' {
				i++
			} else if i >= len(line) || line[i] != '}' {
				return s, fmt.Errorf("%s: expected ',' or '}' after label %s", s.Name, ln)
			}
		}
	}
	fields := strings.Fields(line[i:])
	if len(fields) < 1 || len(fields) > 2 {
		return s, fmt.Errorf("%s: expected a value and an optional timestamp, got %q", s.Name, line[i:])
	}
	v, err := parseValue(fields[0])
	if err != nil {
		return s, fmt.Errorf("%s: %v", s.Name, err)
	}
	s.Value = v
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return s, fmt.Errorf("%s: invalid timestamp %q", s.Name, fields[1])
		}
	}
	return s, nil
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(+1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid value %q", s)
	}
	return v, nil
}

// unescape undoes the text format's escapes: \\ and \n everywhere, \" in label values.
func unescape(s string, quoteAllowed bool) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("dangling backslash")
		}
		i++
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case '"':
			if !quoteAllowed {
				b.WriteString(`\"`) // HELP text keeps \" literally
				continue
			}
			b.WriteByte('"')
		default:
			return "", fmt.Errorf("unknown escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

// Value returns the value of the series name{labels} (labels must match exactly) and whether it
// exists. Histogram series are addressed by their full names (x_bucket, x_sum, x_count).
func (e *Exposition) Value(name string, labels map[string]string) (float64, bool) {
	f := e.owner(name)
	if f == nil {
		return 0, false
	}
	for _, s := range f.Samples {
		if s.Name == name && sameLabels(s.Labels, labels) {
			return s.Value, true
		}
	}
	return 0, false
}

// Sum adds every series of name whose labels include the given ones (nil: all series).
func (e *Exposition) Sum(name string, match map[string]string) float64 {
	f := e.owner(name)
	if f == nil {
		return 0
	}
	total := 0.0
	for _, s := range f.Samples {
		if s.Name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.Labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			total += s.Value
		}
	}
	return total
}

// ByLabel groups the series of name by one label and adds their values, sorted by label value.
func (e *Exposition) ByLabel(name, label string) []LabelValue {
	f := e.owner(name)
	if f == nil {
		return nil
	}
	sums := map[string]float64{}
	for _, s := range f.Samples {
		if s.Name == name {
			sums[s.Labels[label]] += s.Value
		}
	}
	out := make([]LabelValue, 0, len(sums))
	for k, v := range sums {
		out = append(out, LabelValue{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Label < out[j].Label })
	return out
}

// LabelValue is one group of ByLabel.
type LabelValue struct {
	Label string  `json:"label"`
	Value float64 `json:"value"`
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
