package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelayNetcheckCLI: a relay, a coordinator that reads its relay.cred,
// a node, and 'agentnet netcheck' on the node's state, all as separate
// processes on 127.0.0.1.
func TestRelayNetcheckCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped in -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "agentnet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	r := start(t, bin, "relay", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--data", filepath.Join(dir, "relay"), "--name", "r1")
	credPath := r.wait(t, `^credential for the coordinator: (\S+)`)[1]
	r.wait(t, `^next: agentnet coordinator \.\.\. --relay `)
	if fi, err := os.Stat(credPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("relay.cred: %v %v", fi, err)
	}
	coord := start(t, bin, "coordinator", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "coord"), "--relay", credPath)
	coord.wait(t, `^coordinator at https://`)
	token := strings.TrimSpace(agentnet(t, bin, "token", "create", "--admin", filepath.Join(dir, "coord", "admin.cred")))
	state := filepath.Join(dir, "alpha")
	node := start(t, bin, "node", "--token", token, "--name", "alpha", "--state", state, "--listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0")
	node.wait(t, `^node alpha up`)

	var rep struct {
		UDP     bool   `json:"udp"`
		Mapping string `json:"nat_mapping"`
		Relays  []struct {
			Name       string `json:"name"`
			Transports []struct {
				Transport string `json:"transport"`
				OK        bool   `json:"ok"`
				Error     string `json:"error"`
			} `json:"transports"`
		} `json:"relays"`
	}
	out := agentnet(t, bin, "netcheck", "--state", state, "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("netcheck --json: %v\n%s", err, out)
	}
	if !rep.UDP || rep.Mapping != "endpoint-independent" || len(rep.Relays) != 1 || rep.Relays[0].Name != "r1" || len(rep.Relays[0].Transports) != 3 {
		t.Fatalf("netcheck report:\n%s", out)
	}
	for _, tr := range rep.Relays[0].Transports {
		if !tr.OK {
			t.Errorf("netcheck: %s allocation failed: %s", tr.Transport, tr.Error)
		}
	}
	table := agentnet(t, bin, "netcheck", "--state", state)
	for _, want := range []string{"UDP: yes", "NAT mapping: endpoint-independent", "turn/tls", "turn/tcp", "turn/udp"} {
		if !strings.Contains(table, want) {
			t.Errorf("netcheck output lacks %q:\n%s", want, table)
		}
	}

	// Usage errors exit 2.
	var o, e bytes.Buffer
	if code := run([]string{"relay", "--listen", "0.0.0.0:0"}, &o, &e); code != exitUsage {
		t.Errorf("relay without --data: exit %d", code)
	}
	if code := run([]string{"netcheck"}, &o, &e); code != exitUsage {
		t.Errorf("netcheck without --state: exit %d", code)
	}
	if code := run([]string{"netcheck", "--state", t.TempDir()}, &o, &e); code != exitFailure {
		t.Errorf("netcheck on an empty state dir: exit %d", code)
	}
}
