package coordinator

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyRules enforces the package boundaries of
// docs/ARCHITECTURE.md: the control plane, DNS, the relay and the shared wire
// types never pull in the data plane (wireguard-go, gVisor), and the
// coordinator shares nothing with the node but wire.
func TestDependencyRules(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	const mod = "github.com/agentnet/agentnet/"
	for _, pkg := range []string{".", "../dns", "../relay", "../wire"} {
		out, err := exec.Command(goBin, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, banned := range []string{"golang.zx2c4.com/wireguard", "gvisor.dev/gvisor", mod + "netstack", mod + "tun"} {
				if strings.HasPrefix(dep, banned) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
			if pkg == "." && strings.HasPrefix(dep, mod+"overlay") && dep != mod+"wire" {
				t.Errorf("coordinator depends on %s; it may share only wire with the node", dep)
			}
		}
	}
}
