package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestBenchUsageErrors: bad flags and combinations are usage errors, before
// anything is built or run.
func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--tsnet", "--only", "dns"}, // --tsnet measures the data plane
		{"--only", "everything"},
		{"--setups", "carrier-pigeon"},
		{"--scales", "1"},
		{"--reps", "-1"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitUsage {
			t.Errorf("agentnet-bench %q: exit %d, want %d: %s", args, code, exitUsage, errb.String())
		}
	}
}

// TestFindAgentnet: --agentnet, then $AGENTNET_BIN, then agentnet beside
// this program; a named binary that is missing is an error naming it; none
// at all says how to build one.
func TestFindAgentnet(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "agentnet")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "agentnet-other")
	if err := os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, flag, env, dir string
		want, wantErr        string
	}{
		{"flag first", other, bin, dir, other, ""},
		{"env next", "", other, dir, other, ""},
		{"beside this program", "", "", dir, bin, ""},
		{"flag missing", filepath.Join(dir, "nope"), "", dir, "", "--agentnet " + filepath.Join(dir, "nope")},
		{"none", "", "", t.TempDir(), "", "go build -o bin/ ./cmd/agentnet ./cmd/agentnet-bench"},
		{"unknown dir", "", "", "", "", "no agentnet binary"},
	} {
		got, err := findAgentnet(c.flag, c.env, c.dir)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: %q, %v; want an error with %q", c.name, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

// TestNoAgentnetFailsFirst: a run that needs an agentnet process and has
// none fails at once, saying how to build one, and measures nothing.
func TestNoAgentnetFailsFirst(t *testing.T) {
	t.Setenv("AGENTNET_BIN", "")
	var out, errb bytes.Buffer
	start := time.Now()
	if code := run([]string{"--only", "rss", "--quick"}, &out, &errb); code != exitFailure || !strings.Contains(errb.String(), "go build -o bin/") {
		t.Errorf("--only rss without a binary: exit %d, want %d and how to build: %s", code, exitFailure, errb.String())
	}
	if d := time.Since(start); d > 5*time.Second || out.Len() > 0 {
		t.Errorf("took %v and printed %q: it measured something", d, out.String())
	}
	if needsAgentnet("dns", nil) || needsAgentnet("controlplane", nil) || !needsAgentnet("", nil) || !needsAgentnet("dataplane", nil) {
		t.Error("needsAgentnet: only the memory rows and the TUN setups need a binary")
	}
}
