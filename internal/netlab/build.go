package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// WriteResolvConf makes `nameserver NAMESERVER` the resolver configuration of
// commands run in the host's namespace: it writes /etc/netns/<NS>/resolv.conf,
// which `ip netns exec` bind-mounts over /etc/resolv.conf. The lab removes the
// directory when it closes.
func (h *Host) WriteResolvConf(t testing.TB, nameserver string) {
	t.Helper()
	dir := filepath.Join(etcNetns, h.NS)
	body := []byte("nameserver " + nameserver + "\noptions timeout:2 attempts:2\n")
	var err error
	for range 3 { // another lab's Close may remove an empty /etc/netns meanwhile
		if err = os.MkdirAll(dir, 0o755); err != nil {
			continue
		}
		if err = os.WriteFile(filepath.Join(dir, "resolv.conf"), body, 0o644); err == nil {
			return
		}
	}
	t.Fatalf("netlab: write resolv.conf for %s: %v", h.NS, err)
}

// buildDirPrefix names the per-test-process directory holding built binaries:
// agentnet-netlab-<pid>_<start>-*. Directories of dead processes are removed
// by RemoveStale.
const buildDirPrefix = "agentnet-netlab-"

var buildDirRE = regexp.MustCompile(`^` + buildDirPrefix + `(\d+)_(\d+)-`)

var (
	buildMu   sync.Mutex
	buildDir  string
	buildDone = map[string]buildResult{}
)

type buildResult struct {
	path string
	err  error
}

// BuildAgentnet builds ./cmd/agentnet of this module once per test binary and
// returns the binary's path. NETLAB_AGENTNET_BIN=/path/to/agentnet uses a
// prebuilt binary instead.
func BuildAgentnet(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NETLAB_AGENTNET_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("netlab: NETLAB_AGENTNET_BIN: %v", err)
		}
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return build(t, "agentnet", root, "./cmd/agentnet")
}

// BuildEcho builds the echo helper (testdata/echo of this package) once per
// test binary and returns its path. It runs as
//
//	echo serve [-tcp ADDR] [-udp ADDR]
//
// answering every TCP connection and UDP datagram with "seen REMOTEADDR", and
//
//	echo dial [-udp] [-lport N] [-timeout D] ADDR...
//
// printing "ADDR seen REMOTEADDR" per address (UDP from one socket bound to
// -lport), exiting 1 when any address does not answer.
func BuildEcho(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("netlab: cannot locate package source")
	}
	return build(t, "echo", filepath.Dir(file), "./testdata/echo")
}

// build runs `go build -o DIR/name pkg` in dir once per process.
func build(t testing.TB, name, dir, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := name
	if r, ok := buildDone[key]; ok {
		if r.err != nil {
			t.Fatalf("netlab: %v", r.err)
		}
		return r.path
	}
	if buildDir == "" {
		start, err := procStart(os.Getpid())
		if err != nil {
			t.Fatalf("netlab: %v", err)
		}
		d, err := os.MkdirTemp("", fmt.Sprintf("%s%d_%d-", buildDirPrefix, os.Getpid(), start))
		if err != nil {
			t.Fatalf("netlab: %v", err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, name)
	gobin, err := goTool()
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	cmd := exec.Command(gobin, "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	r := buildResult{path: out}
	if b, err := cmd.CombinedOutput(); err != nil {
		r = buildResult{err: fmt.Errorf("go build %s (in %s): %v\n%s", pkg, dir, err, b)}
	}
	buildDone[key] = r
	if r.err != nil {
		t.Fatalf("netlab: %v", r.err)
	}
	return r.path
}

func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("no go tool on PATH or in GOROOT")
	}
	return p, nil
}

// moduleRoot is the directory of this module's go.mod, found from the
// package source location (tests run with the package dir as cwd, but
// callers may live elsewhere in the module).
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate package source")
	}
	for d := filepath.Dir(file); ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if parent := filepath.Dir(d); parent == d {
			return "", errors.New("go.mod not found above " + file)
		}
	}
}

// removeStaleBuildDirs removes build dirs of dead test processes.
func removeStaleBuildDirs() {
	tmp := os.TempDir()
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range ents {
		m := buildDirRE.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		pid, err1 := strconv.Atoi(m[1])
		start, err2 := strconv.ParseUint(m[2], 10, 64)
		if err1 != nil || err2 != nil || processAlive(pid, start) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(tmp, e.Name()))
	}
}
