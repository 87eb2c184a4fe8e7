package coordinator

import (
	"os/exec"
	"slices"
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

// goList runs 'go list' with args in this directory and returns its output
// fields; it skips the test when the go tool is not in PATH.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestSubpackageDependencyRules: the coordinator's parts (store, audit,
// console, policy) are control plane too and never pull in the node or
// the data plane; the audit log links alone (so 'agentnet audit verify'
// carries no server), and the admin client beside wire needs only wire.
func TestSubpackageDependencyRules(t *testing.T) {
	const mod = "github.com/agentnet/agentnet/"
	banned := []string{"golang.zx2c4.com/wireguard", "gvisor.dev/gvisor", mod + "netstack", mod + "tun", mod + "overlay"}
	for _, pkg := range []string{"./store", "./audit", "./console", "./policy"} {
		for _, dep := range goList(t, "-deps", pkg) {
			for _, b := range banned {
				if dep == b || strings.HasPrefix(dep, b+"/") || strings.HasPrefix(dep, b+".") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
	only := map[string][]string{
		"./audit":             {mod + "coordinator/audit", mod + "wire"},
		"../wire/adminclient": {mod + "wire/adminclient", mod + "wire"},
	}
	for pkg, allowed := range only {
		for _, dep := range goList(t, "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg) {
			if dep != "" && !slices.Contains(allowed, dep) {
				t.Errorf("%s depends on %s; it may link only %v and the standard library", pkg, dep, allowed)
			}
		}
	}
}

// TestWhoImportsCoordinator: the coordinator server is linked only by the
// binaries (cmd/...), the in-process test network (internal/testnet) and
// the benchmarks; everything else that talks to it uses wire and
// wire/adminclient. Test files are not counted.
func TestWhoImportsCoordinator(t *testing.T) {
	const core = "github.com/agentnet/agentnet/coordinator"
	allowed := func(p string) bool {
		return strings.HasPrefix(p, "github.com/agentnet/agentnet/cmd/") ||
			p == "github.com/agentnet/agentnet/internal/testnet" ||
			p == "github.com/agentnet/agentnet/bench" || strings.HasPrefix(p, "github.com/agentnet/agentnet/bench/")
	}
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "../...") {
		f := strings.Fields(line)
		if len(f) == 0 || allowed(f[0]) {
			continue
		}
		if slices.Contains(f[1:], core) {
			t.Errorf("%s imports %s; only cmd/, internal/testnet and bench may (others use wire and wire/adminclient)", f[0], core)
		}
	}
}
