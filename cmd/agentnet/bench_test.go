package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentnet/agentnet/bench"
)

func TestFindTSNetModule(t *testing.T) {
	root := t.TempDir()
	mod := filepath.Join(root, "bench", "tsnet")
	deep := filepath.Join(root, "cmd", "agentnet")
	for _, d := range []string{mod, deep} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{root, deep} {
		if got, err := findTSNetModule(from); err != nil || got != mod {
			t.Errorf("findTSNetModule(%s) = %q, %v; want %q", from, got, err, mod)
		}
	}
	if _, err := findTSNetModule(t.TempDir()); !errors.Is(err, bench.ErrNoTSNetModule) {
		t.Errorf("outside a repository: %v, want ErrNoTSNetModule", err)
	}
}

// TestBenchTSNetOnlyDataPlane: --tsnet with another suite is a usage error,
// before anything is built or run.
func TestBenchTSNetOnlyDataPlane(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"bench", "--tsnet", "--only", "dns"}, &out, &errb); code != exitUsage {
		t.Errorf("bench --tsnet --only dns: exit %d, want %d: %s", code, exitUsage, errb.String())
	}
}
