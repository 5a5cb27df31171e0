package inference

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// ORTVersion is the onnxruntime release this build is written and tested against
// (github.com/yalue/onnxruntime_go v1.27.0 speaks its C API version).
const ORTVersion = "1.27.0"

// ORTLibEnv names the environment variable that points at the onnxruntime shared library.
const ORTLibEnv = "DPERSONA_ORT_LIB"

// ORTLibName is the file name scripts/setup.sh gives the pinned library.
const ORTLibName = "libonnxruntime.so." + ORTVersion

// ErrRuntime is wrapped by every error about loading the onnxruntime library.
var ErrRuntime = errors.New("onnxruntime")

var runtimeState struct {
	sync.Mutex
	path    string
	version string
}

// ResolveLibraryPath picks the onnxruntime library: an explicit path (the --ort-lib flag) wins,
// then $DPERSONA_ORT_LIB, then third_party/onnxruntime/libonnxruntime.so.1.27.0 relative to the
// working directory and to the executable (and its parent, for bin/dpersona).
func ResolveLibraryPath(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if p := os.Getenv(ORTLibEnv); p != "" {
		return p
	}
	rel := filepath.Join("third_party", "onnxruntime", ORTLibName)
	candidates := []string{rel}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		candidates = append(candidates, filepath.Join(dir, rel), filepath.Join(dir, "..", rel))
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			if abs, err := filepath.Abs(c); err == nil {
				return abs
			}
			return c
		}
	}
	return rel
}

// InitRuntime loads the onnxruntime shared library once per process and checks that it is the
// release this build speaks (same major.minor as ORTVersion). Calling it again with the same
// path is a no-op; a different path is an error (the C library cannot be swapped in a process).
func InitRuntime(libPath string) (version string, err error) {
	runtimeState.Lock()
	defer runtimeState.Unlock()
	if ort.IsInitialized() {
		if libPath != runtimeState.path {
			return "", fmt.Errorf("%w: already initialised with %s, cannot switch to %s", ErrRuntime, runtimeState.path, libPath)
		}
		return runtimeState.version, nil
	}
	if _, statErr := os.Stat(libPath); statErr != nil {
		return "", fmt.Errorf("%w library %s: %v (run scripts/setup.sh, or name the library with --ort-lib or $%s)", ErrRuntime, libPath, statErr, ORTLibEnv)
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		msg := err.Error()
		if strings.Contains(msg, "Error setting ORT API base: 2") {
			return "", fmt.Errorf("%w library %s (version %s) does not provide the C API of onnxruntime %s: version mismatch, install %s", ErrRuntime, libPath, ort.GetVersion(), ORTVersion, ORTVersion)
		}
		return "", fmt.Errorf("%w library %s cannot be loaded: %v", ErrRuntime, libPath, err)
	}
	v := ort.GetVersion()
	if !sameMinor(v, ORTVersion) {
		ort.DestroyEnvironment()
		return "", fmt.Errorf("%w library %s is version %s, this build needs %s (version mismatch)", ErrRuntime, libPath, v, ORTVersion)
	}
	runtimeState.path, runtimeState.version = libPath, v
	return v, nil
}

// sameMinor compares "major.minor" of two version strings.
func sameMinor(a, b string) bool {
	mm := func(v string) string {
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 {
			return v
		}
		return parts[0] + "." + parts[1]
	}
	return a != "" && mm(a) == mm(b)
}
