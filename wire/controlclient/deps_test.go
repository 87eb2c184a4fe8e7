package controlclient

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: the control client depends on wire and the standard
// library (and golang.org/x, as net/http's vendored copy does) only; no
// server and no node internals.
func TestDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	const mod = "github.com/agentnet/agentnet/"
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == mod+"wire", dep == mod+"wire/controlclient", strings.HasPrefix(dep, "golang.org/x/"):
		default:
			t.Errorf("wire/controlclient depends on %s", dep)
		}
	}
}
