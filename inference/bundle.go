package inference

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"dpersona/internal/modelspec"
)

// FormatVersion is the only bundle format this loader understands (docs/model-bundle.md).
const FormatVersion = 1

// Manifest is manifest.json of a model bundle. Unknown top-level fields are tolerated so that
// training can record extra provenance, but every field listed here is checked by Validate.
type Manifest struct {
	FormatVersion int               `json:"format_version"`
	Name          string            `json:"name"`
	Version       string            `json:"version"`
	Description   string            `json:"description"`
	Config        string            `json:"config"`
	ONNX          string            `json:"onnx"`
	Input         InputSpec         `json:"input"`
	LatentSize    int               `json:"latent_size"`
	Raters        []Rater           `json:"raters"`
	RaterOrder    string            `json:"rater_order"`
	Defaults      Defaults          `json:"defaults"`
	Segment       Segment           `json:"segment"`
	Algorithm     Algorithm         `json:"algorithm"`
	Training      json.RawMessage   `json:"training,omitempty"`
	Metrics       json.RawMessage   `json:"metrics,omitempty"`
	Golden        string            `json:"golden"`
	Files         map[string]string `json:"files"`
}

// InputSpec is the manifest's "input" object, the one model-input type dicomio also uses.
type InputSpec = modelspec.Input

// Rater is one stage-II head.
type Rater struct {
	Index       int    `json:"index"`
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
}

// Defaults are the serving parameters the bundle was validated with (S, K, threshold);
// Defaults.Resolve applies a request's overrides.
type Defaults = modelspec.Serving

// Code is a coded concept (scheme designator, code value, meaning) as DICOM-SEG needs it.
type Code struct {
	Scheme  string `json:"scheme"`
	Code    string `json:"code"`
	Meaning string `json:"meaning"`
}

// Segment describes what the masks segment.
type Segment struct {
	Label    string `json:"label"`
	Category Code   `json:"category"`
	Type     Code   `json:"type"`
}

// Algorithm identifies the producing algorithm in the SEG objects.
type Algorithm struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Family  string `json:"family"`
}

// Bundle is a loaded, verified model bundle.
type Bundle struct {
	Dir      string
	Manifest Manifest
}

// Label names the bundle in messages: its manifest name and version, or the directory when the
// manifest could not be read.
func (b *Bundle) Label() string {
	return b.Manifest.Name + " " + b.Manifest.Version
}

// ONNXPath is the absolute path of the graph file.
func (b *Bundle) ONNXPath() string { return filepath.Join(b.Dir, filepath.FromSlash(b.Manifest.ONNX)) }

// NumRaters is R, the number of stage-II heads.
func (b *Bundle) NumRaters() int { return len(b.Manifest.Raters) }

// BundleError names the model (or its directory) and the cause of a refusal.
type BundleError struct {
	Model string // manifest name, or the directory when the manifest is unreadable
	Err   error
}

func (e *BundleError) Error() string { return fmt.Sprintf("model %s: %v", e.Model, e.Err) }
func (e *BundleError) Unwrap() error { return e.Err }

// ErrChecksum is wrapped by errors for a file whose SHA-256 differs from the manifest.
var ErrChecksum = errors.New("sha256 mismatch")

// LoadBundle reads dir/manifest.json, validates it, and checks every listed file's SHA-256.
// It refuses unknown format versions, missing or tampered files and incomplete manifests.
func LoadBundle(dir string) (*Bundle, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, &BundleError{Model: dir, Err: err}
	}
	raw, err := os.ReadFile(filepath.Join(abs, "manifest.json"))
	if err != nil {
		return nil, &BundleError{Model: abs, Err: fmt.Errorf("reading manifest: %w", err)}
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, &BundleError{Model: abs, Err: fmt.Errorf("manifest.json is not valid JSON: %w", err)}
	}
	label := m.Name
	if label == "" {
		label = abs
	} else {
		label = fmt.Sprintf("%q (%s)", m.Name, abs)
	}
	if m.FormatVersion != FormatVersion {
		return nil, &BundleError{Model: label, Err: fmt.Errorf("unknown bundle format_version %d (this build reads %d)", m.FormatVersion, FormatVersion)}
	}
	if err := m.Validate(); err != nil {
		return nil, &BundleError{Model: label, Err: err}
	}
	if err := verifyFiles(abs, m.Files); err != nil {
		return nil, &BundleError{Model: label, Err: err}
	}
	return &Bundle{Dir: abs, Manifest: m}, nil
}

// Validate checks the manifest's own consistency (not the files).
func (m *Manifest) Validate() error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if m.Name == "" {
		bad("name is empty")
	}
	if m.ONNX == "" {
		bad("onnx (graph file) is not named")
	}
	// The input spec is validated here, once, at bundle load (its defaults filled in).
	if err := m.Input.Validate(); err != nil {
		var se *modelspec.Error
		if errors.As(err, &se) {
			problems = append(problems, se.Problems...)
		} else {
			bad("input: %v", err)
		}
	}
	if m.LatentSize < 1 {
		bad("latent_size %d must be positive", m.LatentSize)
	}
	if len(m.Raters) == 0 {
		bad("raters is empty: stage II needs at least one head")
	}
	for i, r := range m.Raters {
		if r.Index != i {
			bad("raters[%d] has index %d (raters must be listed in head order 0..R-1)", i, r.Index)
		}
		if r.Name == "" {
			bad("raters[%d] has no name", i)
		}
	}
	if err := m.Defaults.Validate(); err != nil {
		var se *modelspec.Error
		if errors.As(err, &se) {
			for _, p := range se.Problems {
				bad("defaults %s", p)
			}
		} else {
			bad("defaults: %v", err)
		}
	}
	if m.Segment.Label == "" || m.Segment.Category.Code == "" || m.Segment.Type.Code == "" {
		bad("segment needs a label, a category code and a type code")
	}
	if m.Algorithm.Name == "" || m.Algorithm.Version == "" {
		bad("algorithm needs a name and a version")
	}
	if len(m.Files) == 0 {
		bad("files lists no checksums")
	}
	for name := range m.Files {
		if !localPath(name) {
			bad("files entry %q is not a relative path inside the bundle", name)
		}
		if name == "manifest.json" {
			bad("files must not list manifest.json itself")
		}
	}
	if m.ONNX != "" {
		if _, ok := m.Files[m.ONNX]; !ok {
			bad("the graph %q has no checksum in files", m.ONNX)
		}
	}
	if m.Golden != "" {
		if _, ok := m.Files[m.Golden]; !ok {
			bad("the golden vectors %q have no checksum in files", m.Golden)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("invalid manifest: %s", strings.Join(problems, "; "))
	}
	return nil
}

// localPath reports whether a manifest path stays inside the bundle directory.
func localPath(p string) bool {
	if p == "" || strings.Contains(p, "\\") || path.IsAbs(p) {
		return false
	}
	c := path.Clean(p)
	return c == p && c != "." && c != ".." && !strings.HasPrefix(c, "../")
}

func verifyFiles(dir string, files map[string]string) error {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		want := strings.ToLower(files[name])
		if len(want) != 64 {
			return fmt.Errorf("file %s: manifest checksum %q is not a SHA-256 hex digest", name, files[name])
		}
		got, err := fileSHA256(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return fmt.Errorf("file %s: %w", name, err)
		}
		if got != want {
			return fmt.Errorf("file %s: %w (manifest %s, file %s): the bundle was modified or is incomplete", name, ErrChecksum, want[:12], got[:12])
		}
	}
	return nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
