package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dpersona/inference"
	"dpersona/internal/testutil"
)

func openTiny(t *testing.T) func(dir string) (*inference.Engine, error) {
	lib := testutil.RequireORT(t, inference.ORTLibEnv, inference.ORTLibName)
	return func(dir string) (*inference.Engine, error) {
		b, err := inference.LoadBundle(dir)
		if err != nil {
			return nil, err
		}
		return inference.NewEngine(b, inference.EngineOptions{LibraryPath: lib, Sessions: 1, IntraOpThreads: 1})
	}
}

// TestOpenModels: the registry loads and warms up each bundle once, names its version, routes a
// request by bundle directory, and refuses what it cannot serve with the cause.
func TestOpenModels(t *testing.T) {
	tiny := filepath.Join(testutil.RepoRoot(), "inference", "testdata", "tiny")
	open := openTiny(t)
	ctx := context.Background()

	m, err := OpenModels(ctx, []string{tiny, tiny}, open, "dpersona test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.engines) != 1 {
		t.Fatalf("the same directory twice opened %d engines", len(m.engines))
	}
	v, err := m.ModelVersion(tiny)
	if err != nil || !strings.HasPrefix(v, m.names[tiny]+" ") || len(v) <= len(m.names[tiny])+1 {
		t.Fatalf("ModelVersion = %q, %v", v, err)
	}
	if _, err := m.ModelVersion("/elsewhere"); err == nil {
		t.Error("a bundle that is not loaded has a version")
	}
	var f *Failure
	if _, err := m.Process(ctx, "/elsewhere", Request{StudyInstanceUID: "1.2.3"}); !errors.As(err, &f) || f.Stage != StageModel {
		t.Errorf("request for a bundle that is not loaded: %v", err)
	}

	// The same manifest name under two directories cannot be selected by name.
	dup := t.TempDir()
	if err := os.CopyFS(dup, os.DirFS(tiny)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenModels(ctx, []string{tiny, dup}, open, "x", nil); err == nil || !strings.Contains(err.Error(), "same manifest name") {
		t.Errorf("two bundles with one manifest name: %v", err)
	}

	// No manifest: ErrNoModel, so the gateway keeps receiving.
	if _, err := OpenModels(ctx, []string{t.TempDir()}, open, "x", nil); !errors.Is(err, ErrNoModel) {
		t.Errorf("directory without a bundle: %v", err)
	}
	if _, err := OpenModels(ctx, nil, open, "x", nil); !errors.Is(err, ErrNoModel) {
		t.Errorf("no directory: %v", err)
	}
}
