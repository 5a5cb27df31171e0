package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Docker: the Dockerfile, its dockerignore and the build stage it runs.

// dockerInstruction returns the arguments of the last instruction of that name (continuations
// joined).
func dockerInstruction(t *testing.T, name string) string {
	t.Helper()
	var last string
	for _, ins := range dockerInstructions(t) {
		if ins[0] == name {
			last = ins[1]
		}
	}
	if last == "" {
		t.Fatalf("%s has no %s", dockerfile, name)
	}
	return last
}

func dockerInstructions(t *testing.T) [][2]string {
	t.Helper()
	var out [][2]string
	var cur strings.Builder
	for _, line := range strings.Split(readDeploy(t, dockerfile), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		name, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, [2]string{strings.ToUpper(name), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

func shellVar(t *testing.T, file, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, file))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*:?=\s*(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s sets no %s", file, name)
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	ortVersion := shellVar(t, "scripts/setup.sh", "ORT_VERSION")
	if mk := shellVar(t, "Makefile", "ORT_VERSION"); mk != ortVersion {
		t.Errorf("Makefile ORT_VERSION %s != scripts/setup.sh %s", mk, ortVersion)
	}
	lib := "third_party/onnxruntime/libonnxruntime.so." + ortVersion
	ins := dockerInstructions(t)

	var froms []string
	copies := map[string]string{} // source -> destination (from the context)
	envs := ""
	for _, in := range ins {
		switch in[0] {
		case "FROM":
			froms = append(froms, in[1])
		case "COPY":
			f := strings.Fields(in[1])
			if strings.HasPrefix(f[0], "--from=") {
				continue
			}
			for _, src := range f[:len(f)-1] {
				copies[strings.TrimPrefix(src, "./")] = f[len(f)-1]
			}
		case "ENV":
			envs += " " + in[1]
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:${GO_VERSION}-bookworm AS build") || !strings.HasPrefix(froms[1], "debian:12-slim") {
		t.Errorf("want a golang bookworm build stage and a debian:12-slim runtime, got %q", froms)
	}
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVer := ""
	if m := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(gomod); m != nil {
		goVer = string(m[1])
	}
	argGo := ""
	for _, in := range ins {
		if in[0] == "ARG" && strings.HasPrefix(in[1], "GO_VERSION=") {
			argGo = strings.TrimPrefix(in[1], "GO_VERSION=")
		}
	}
	if argGo == "" || !strings.HasPrefix(goVer, argGo) {
		t.Errorf("ARG GO_VERSION=%s does not match go.mod's go %s", argGo, goVer)
	}

	dest, ok := copies[lib]
	if !ok {
		t.Fatalf("the image does not carry %s (ORT_VERSION %s of scripts/setup.sh); COPY sources: %v", lib, ortVersion, copies)
	}
	if !strings.Contains(envs, "DPERSONA_ORT_LIB="+dest) {
		t.Errorf("DPERSONA_ORT_LIB does not point at the copied library %s: ENV%s", dest, envs)
	}
	if _, ok := copies["models/default"]; !ok {
		t.Error("the image does not carry models/default")
	}

	// Every package the binary is built from is in the build context.
	listCmd := exec.Command("go", "list", "-deps", "./cmd/dpersona")
	listCmd.Dir = repo
	out, err := listCmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/dpersona: %v", err)
	}
	ignore := readDeploy(t, dockerignore)
	for _, pkg := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(pkg, "dpersona/")
		if !ok {
			continue
		}
		top := strings.Split(rel, "/")[0]
		if _, ok := copies[top]; !ok {
			t.Errorf("the build stage does not COPY %s/ (needed by %s)", top, pkg)
		}
		if !strings.Contains(ignore, "!"+top+"/") {
			t.Errorf("%s excludes %s/ from the build context", dockerignore, top)
		}
	}
	for src := range copies {
		if src == lib || src == "models/default" {
			continue // made by scripts/setup.sh and by training export, not committed
		}
		if _, err := os.Stat(filepath.Join(repo, src)); err != nil {
			t.Errorf("COPY source %s does not exist", src)
		}
		if !strings.Contains(ignore, "!"+src) {
			t.Errorf("%s excludes COPY source %s", dockerignore, src)
		}
	}

	user := dockerInstruction(t, "USER")
	if uid := strings.Split(user, ":")[0]; uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: the runtime must not run as root", user)
	}

	// HEALTHCHECK runs `dpersona status --live` against the --http-listen port of CMD.
	hc := dockerInstruction(t, "HEALTHCHECK")
	_, hcCmd, ok := strings.Cut(hc, "CMD ")
	var hcArgs []string
	if !ok || json.Unmarshal([]byte(hcCmd), &hcArgs) != nil || len(hcArgs) < 3 {
		t.Fatalf("HEALTHCHECK %q: want CMD [\"/opt/dpersona/bin/dpersona\", \"status\", \"--live\", ...]", hc)
	}
	if hcArgs[1] != "status" {
		t.Fatalf("HEALTHCHECK does not run dpersona status: %q", hcArgs)
	}
	statusFlags := flagsOf(t, "status")
	hf := serveFlags(hcArgs[2:])
	for name := range hf {
		if !statusFlags[name] {
			t.Errorf("HEALTHCHECK: `dpersona status` has no flag --%s", name)
		}
	}
	var cmd []string
	json.Unmarshal([]byte(dockerInstruction(t, "CMD")), &cmd)
	if _, live := hf["live"]; !live || portOf(hf["http"]) != portOf(serveFlags(cmd)["http-listen"]) {
		t.Errorf("HEALTHCHECK %q must check liveness on the --http-listen port of CMD %q", hcArgs, cmd)
	}
}

// dockerignoreIncludes applies deploy/docker/Dockerfile.dockerignore to a path relative to the
// repository root: the last matching rule wins. It understands the rule forms that file uses
// ("*", "!dir/", "!file", "**/*suffix", "**/dir/"), and fails on any other, so that a new form is
// not silently misread.
func dockerignoreIncludes(t *testing.T, rules []string, rel string) bool {
	included := true
	for _, r := range rules {
		neg := strings.HasPrefix(r, "!")
		p := strings.TrimPrefix(r, "!")
		var match bool
		switch {
		case p == "*":
			match = true
		case strings.HasPrefix(p, "**/") && strings.HasSuffix(p, "/"):
			dir := strings.TrimSuffix(strings.TrimPrefix(p, "**/"), "/")
			match = contains(strings.Split(filepath.Dir(rel), "/"), dir)
		case strings.HasPrefix(p, "**/*"):
			match = strings.HasSuffix(rel, strings.TrimPrefix(p, "**/*"))
		case !strings.ContainsAny(p, "*?["):
			match = rel == strings.TrimSuffix(p, "/") || strings.HasPrefix(rel, strings.TrimSuffix(p, "/")+"/")
		default:
			t.Fatalf("dockerignore rule %q: form not understood by this test", r)
		}
		if match {
			included = neg
		}
	}
	return included
}

// TestDockerBuildStageCompiles repeats the build stage without a container engine: it lays out
// exactly what the Dockerfile COPYs into /src from the context that the dockerignore lets through,
// and runs the same go build there, so a package or file missing from the image build fails here.
func TestDockerBuildStageCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: compiles the binary from a filtered copy of the tree")
	}
	var rules []string
	for _, line := range strings.Split(readDeploy(t, dockerignore), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			rules = append(rules, line)
		}
	}
	src := t.TempDir()
	stage := 0
	var buildCmd string
	for _, in := range dockerInstructions(t) {
		switch in[0] {
		case "FROM":
			stage++
		case "RUN":
			if stage == 1 && strings.Contains(in[1], "go build") {
				buildCmd = in[1]
			}
		case "COPY":
			if stage != 1 {
				continue
			}
			f := strings.Fields(in[1])
			for _, from := range f[:len(f)-1] {
				from = strings.TrimPrefix(from, "./")
				err := filepath.WalkDir(filepath.Join(repo, from), func(p string, d os.DirEntry, err error) error {
					if err != nil || d.IsDir() {
						return err
					}
					rel, _ := filepath.Rel(repo, p)
					if !dockerignoreIncludes(t, rules, filepath.ToSlash(rel)) {
						return nil
					}
					b, err := os.ReadFile(p)
					if err != nil {
						return err
					}
					dst := filepath.Join(src, rel)
					if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
						return err
					}
					return os.WriteFile(dst, b, 0o644)
				})
				if err != nil {
					t.Fatalf("COPY %s: %v", from, err)
				}
			}
		}
	}
	if !strings.Contains(buildCmd, "-o /out/dpersona ./cmd/dpersona") {
		t.Fatalf("no `go build ... -o /out/dpersona ./cmd/dpersona` in the build stage: %q", buildCmd)
	}
	if _, err := os.Stat(filepath.Join(src, "cmd", "dpersona", "status_test.go")); err == nil {
		t.Error("the dockerignore lets test files into the build context")
	}
	out := filepath.Join(t.TempDir(), "dpersona")
	// Not the image's -trimpath -s -w: with the flags of the other tests' builds the dependencies
	// come from the build cache, and only the project's own packages compile again (the question
	// here is whether the context is complete, not how the binary is stripped).
	build := exec.Command("go", "build", "-ldflags", "-X main.version=docker-test", "-o", out, "./cmd/dpersona")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "GOFLAGS=-mod=mod")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the build stage would fail: go build in the filtered context: %v\n%s", err, b)
	}
	v, err := exec.Command(out, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "docker-test") {
		t.Errorf("built binary --version: %v %s", err, v)
	}
}
