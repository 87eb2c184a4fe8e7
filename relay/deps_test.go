package relay

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyRules keeps the relay's roles apart (docs/ARCHITECTURE.md):
// the control plane links TURN credentials but no TURN server or DTLS
// code; relay/turncred stays free of pion; and no relay package pulls in
// the node (overlay) or the data plane (netstack, gVisor, wireguard-go).
func TestDependencyRules(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	const mod = "github.com/agentnet/agentnet/"
	deps := func(pkgs ...string) []string {
		t.Helper()
		out, err := exec.Command(goBin, append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %v: %v\n%s", pkgs, err, out)
		}
		return strings.Fields(string(out))
	}
	for _, rule := range []struct {
		pkgs   []string
		banned []string
	}{
		{[]string{"../coordinator/..."}, []string{"github.com/pion/turn", "github.com/pion/dtls"}},
		{[]string{"./turncred"}, []string{"github.com/pion/"}},
		{[]string{"./..."}, []string{mod + "overlay", mod + "netstack", mod + "tun", "gvisor.dev/gvisor", "golang.zx2c4.com/wireguard"}},
	} {
		for _, dep := range deps(rule.pkgs...) {
			for _, b := range rule.banned {
				if strings.HasPrefix(dep, b) {
					t.Errorf("%v depends on %s", rule.pkgs, dep)
				}
			}
		}
	}
}
