package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTestSh runs ../../test.sh with a fake go on PATH that prints its
// arguments: package arguments replace ./..., flags do not (issue 16 item
// 9: ./test.sh PKG ran the whole suite plus PKG).
func TestTestSh(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	bin := t.TempDir()
	fake := "#!/bin/sh\nshift\nfor a in \"$@\"; do printf '%s|' \"$a\"; done\n"
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("../../test.sh")
	if err != nil {
		t.Fatal(err)
	}
	const base = "-race|-timeout|20m|-count=1|"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, base + "./...|"},
		{[]string{"./overlay"}, base + "./overlay|"},
		{[]string{"./overlay", "./dns/..."}, base + "./overlay|./dns/...|"},
		{[]string{"-run", "TestPing", "./overlay"}, base + "-run|TestPing|./overlay|"},
		{[]string{"./overlay", "-run", "TestPing", "-v"}, base + "-run|TestPing|-v|./overlay|"},
		{[]string{"-run", "TestPing"}, base + "-run|TestPing|./...|"},
		{[]string{"-run=./x", "-short"}, base + "-run=./x|-short|./...|"},
		{[]string{"github.com/agentnet/agentnet/dns"}, base + "github.com/agentnet/agentnet/dns|"},
		{[]string{"-run", "./notapkg"}, base + "-run|./notapkg|./...|"},
	} {
		cmd := exec.Command("bash", append([]string{script}, tc.args...)...)
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("test.sh %v: %v\n%s", tc.args, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("test.sh %s ran go test %q, want %q", strings.Join(tc.args, " "), got, tc.want)
		}
	}
}
