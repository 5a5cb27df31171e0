// Package docs holds the tests that keep the documents of this folder true to the code.
package docs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const module = "dpersona"

// rule is one row of the import table of architecture.md.
type rule struct {
	packages []string // patterns: "gateway/pdu", "gateway/..."
	any      bool     // "everything"
	allowed  []string // patterns a package may import directly (besides the standard library)
	never    []string // patterns it may not depend on, even indirectly (stdlib ones: directly)
}

// listedPackage is what the check needs of `go list -json`.
type listedPackage struct {
	ImportPath string
	Imports    []string // non-test imports
	Deps       []string // all dependencies of the non-test package, transitively
}

var backticked = regexp.MustCompile("`([^`]+)`")

// parseRules reads the import table: the rows under the header "| package | one job | may
// import | never |".
func parseRules(doc string) ([]rule, error) {
	var rules []rule
	in := false
	sc := bufio.NewScanner(strings.NewReader(doc))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "| package | one job | may import | never |") {
			in = true
			continue
		}
		if !in || strings.HasPrefix(line, "|---") {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 4 {
			return nil, fmt.Errorf("table row with %d cells, want 4: %s", len(cells), line)
		}
		r := rule{packages: tokens(cells[0]), allowed: tokens(cells[2]), never: tokens(cells[3])}
		r.any = strings.TrimSpace(cells[2]) == "everything"
		rules = append(rules, r)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("no import table (header \"| package | one job | may import | never |\")")
	}
	return rules, nil
}

func tokens(cell string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(cell, -1) {
		out = append(out, strings.TrimSuffix(m[1], "/"))
	}
	return out
}

// full turns a table entry into an import path pattern: module packages are written relative to
// the module, others (with a dot in the first element) in full.
func full(p string) string {
	if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") || p == "stdlib" {
		return p
	}
	return module + "/" + p
}

// matches reports whether an import path falls under a table entry. A standard library path is
// compared with the entry as written ("net"), any other with the entry made full.
func matches(pattern, path string) bool {
	if !isStd(path) {
		pattern = full(pattern)
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".") && first != module
}

// ruleFor returns the row for a package: an exact pattern before a "/..." one, the longest first.
func ruleFor(rules []rule, path string) (rule, bool) {
	best, bestLen, found := rule{}, -1, false
	for _, r := range rules {
		for _, p := range r.packages {
			if !matches(p, path) {
				continue
			}
			n := len(p)
			if !strings.HasSuffix(p, "/...") {
				n += 1000 // exact beats any wildcard
			}
			if n > bestLen {
				best, bestLen, found = r, n, true
			}
		}
	}
	return best, found
}

// check returns one line per broken rule.
func check(rules []rule, pkgs []listedPackage) []string {
	var out []string
	for _, p := range pkgs {
		r, ok := ruleFor(rules, p.ImportPath)
		if !ok {
			out = append(out, fmt.Sprintf("%s has no row in the import table of docs/architecture.md", p.ImportPath))
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"/cmd/") {
				out = append(out, fmt.Sprintf("%s imports %s: nothing imports cmd/", p.ImportPath, imp))
			}
			if imp == module+"/internal/testutil" {
				out = append(out, fmt.Sprintf("%s imports %s outside its _test.go files", p.ImportPath, imp))
			}
			if r.any || isStd(imp) && !listed(r.never, imp) {
				continue
			}
			if listed(r.never, imp) {
				out = append(out, fmt.Sprintf("%s imports %s, which its row forbids", p.ImportPath, imp))
				continue
			}
			if !listed(r.allowed, imp) {
				out = append(out, fmt.Sprintf("%s imports %s, which its row does not allow", p.ImportPath, imp))
			}
		}
		for _, dep := range p.Deps {
			if isStd(dep) || contains(p.Imports, dep) {
				continue // standard library "never" entries count only when imported directly
			}
			if listed(r.never, dep) {
				out = append(out, fmt.Sprintf("%s depends on %s (indirectly), which its row forbids", p.ImportPath, dep))
			}
		}
	}
	sort.Strings(out)
	return out
}

func listed(patterns []string, path string) bool {
	for _, p := range patterns {
		if matches(p, path) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func goList(t *testing.T) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func readRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseRules(string(b))
	if err != nil {
		t.Fatalf("architecture.md: %v", err)
	}
	return rules
}

// TestImportRulesHold checks every package of the module against the table.
func TestImportRulesHold(t *testing.T) {
	rules := readRules(t)
	pkgs := goList(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	for _, v := range check(rules, pkgs) {
		t.Error(v)
	}
}

// TestImportRulesCatchViolations feeds the check made-up packages that break each kind of rule,
// so that a check which cannot fail would be seen.
func TestImportRulesCatchViolations(t *testing.T) {
	rules := readRules(t)
	for _, c := range []struct {
		pkg  listedPackage
		want string
	}{
		{listedPackage{ImportPath: "dpersona/inference", Imports: []string{"dpersona/dicomio"}}, "dpersona/inference imports dpersona/dicomio, which its row forbids"},
		{listedPackage{ImportPath: "dpersona/gateway/pdu", Imports: []string{"dpersona/gateway/ul"}}, "dpersona/gateway/pdu imports dpersona/gateway/ul, which its row does not allow"},
		{listedPackage{ImportPath: "dpersona/internal/dicomstd", Imports: []string{"dpersona/internal/obs"}}, "does not allow"},
		{listedPackage{ImportPath: "dpersona/gateway", Imports: []string{"dpersona/dicomio"}, Deps: []string{"dpersona/dicomio", "github.com/nats-io/nats.go"}}, "dpersona/gateway depends on github.com/nats-io/nats.go (indirectly), which its row forbids"},
		{listedPackage{ImportPath: "dpersona/dicomio", Imports: []string{"net/http"}}, "dpersona/dicomio imports net/http, which its row forbids"},
		{listedPackage{ImportPath: "dpersona/pipeline", Imports: []string{"dpersona/internal/testutil"}}, "outside its _test.go files"},
		{listedPackage{ImportPath: "dpersona/newthing"}, "dpersona/newthing has no row"},
	} {
		got := check(rules, []listedPackage{c.pkg})
		if len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), c.want) {
			t.Errorf("%s importing %v: got %q, want a violation %q", c.pkg.ImportPath, c.pkg.Imports, got, c.want)
		}
	}
	// And what is allowed passes: a row's own imports, the standard library, a wildcard row.
	ok := []listedPackage{
		{ImportPath: "dpersona/gateway/ul", Imports: []string{"bufio", "dpersona/gateway/pdu", "dpersona/internal/dicomstd"}, Deps: []string{"dpersona/gateway/pdu", "dpersona/internal/dicomstd"}},
		{ImportPath: "dpersona/cmd/dpersona", Imports: []string{"dpersona/gateway", "github.com/spf13/cobra"}},
		{ImportPath: "dpersona/dicomio", Imports: []string{"github.com/suyashkumar/dicom/pkg/tag"}, Deps: []string{"net"}},
	}
	if got := check(rules, ok); len(got) != 0 {
		t.Errorf("allowed imports reported: %q", got)
	}
}
