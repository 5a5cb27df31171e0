package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"dpersona/inference"
)

// ErrNoModel says that a bundle directory has no manifest: the gateway keeps receiving and the
// studies wait in the queue until a worker with a model joins, instead of failing them.
var ErrNoModel = errors.New("no model bundle")

// Models is the registry of the bundles a gateway serves: routes name bundle directories, the
// processor selects engines by manifest name, and result names carry "name version".
type Models struct {
	proc     *Processor
	engines  []*inference.Engine
	names    map[string]string // bundle dir -> manifest name
	versions map[string]string // bundle dir -> "name version"
}

// OpenModels loads every bundle directory (duplicates ignored) with open, which verifies the
// checksums and creates the sessions, and warms each engine up, so that the first study does
// not pay for the first onnxruntime runs. Two bundles with the same manifest name are refused
// (the processor selects by name). A directory without manifest.json fails with ErrNoModel.
func OpenModels(ctx context.Context, dirs []string, open func(dir string) (*inference.Engine, error), softwareVersion string, log *slog.Logger) (*Models, error) {
	if log == nil {
		log = slog.Default()
	}
	uniq := map[string]bool{}
	var sorted []string
	for _, d := range dirs {
		if !uniq[d] {
			uniq[d] = true
			sorted = append(sorted, d)
		}
	}
	sort.Strings(sorted)
	m := &Models{names: map[string]string{}, versions: map[string]string{}}
	byName := map[string]string{}
	for _, dir := range sorted {
		if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
			m.Close()
			return nil, fmt.Errorf("%w at %s (%v)", ErrNoModel, dir, err)
		}
		e, err := open(dir)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("model %s: %w", dir, err)
		}
		m.engines = append(m.engines, e)
		man := e.Bundle().Manifest
		if other, dup := byName[man.Name]; dup {
			m.Close()
			return nil, fmt.Errorf("models %s and %s have the same manifest name %q", other, dir, man.Name)
		}
		byName[man.Name] = dir
		m.names[dir] = man.Name
		m.versions[dir] = man.Name + " " + man.Version
		warm := time.Now()
		if err := e.WarmUp(ctx); err != nil {
			m.Close()
			return nil, fmt.Errorf("model %s: warm-up run failed: %w", dir, err)
		}
		log.Info("model loaded", "dir", dir, "model", man.Name, "version", man.Version, "device", e.Device(),
			"warm_up_ms", time.Since(warm).Milliseconds())
		if note := e.DeviceNote(); note != "" {
			log.Warn(note)
		}
	}
	if len(m.engines) == 0 {
		return nil, fmt.Errorf("%w: no route names a model", ErrNoModel)
	}
	m.proc = New(m.engines[0], m.engines[1:]...)
	m.proc.SoftwareVersion = softwareVersion
	m.proc.Logger = log
	return m, nil
}

// ModelVersion is "name version" of the bundle in dir.
func (m *Models) ModelVersion(dir string) (string, error) {
	v, ok := m.versions[dir]
	if !ok {
		return "", fmt.Errorf("model %s is not loaded in this worker", dir)
	}
	return v, nil
}

// Process runs req with the bundle in dir.
func (m *Models) Process(ctx context.Context, dir string, req Request) (*Result, error) {
	name, ok := m.names[dir]
	if !ok {
		return nil, &Failure{StudyInstanceUID: req.StudyInstanceUID, Stage: StageModel, Err: fmt.Errorf("model %s is not loaded in this worker", dir)}
	}
	req.Model = name
	return m.proc.Process(ctx, req)
}

// Close releases every engine.
func (m *Models) Close() {
	for _, e := range m.engines {
		e.Close()
	}
	m.engines = nil
}
