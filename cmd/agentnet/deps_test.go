package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoBenchInProduct: the product binary links no benchmark code; the
// benchmarks are cmd/agentnet-bench.
func TestNoBenchInProduct(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/agentnet/agentnet/bench" || strings.HasPrefix(dep, "github.com/agentnet/agentnet/bench/") {
			t.Errorf("cmd/agentnet depends on %s", dep)
		}
	}
}
