package coordinator

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoDataPlaneImports enforces the design rule that the coordinator
// never depends on wireguard-go or gVisor.
func TestNoDataPlaneImports(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"golang.zx2c4.com/wireguard", "gvisor.dev/gvisor"} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("coordinator depends on %s", pkg)
			}
		}
	}
}
