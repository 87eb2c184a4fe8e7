package netlab

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAgentnetEndToEnd runs the real agentnet binary in the lab: a
// coordinator on its own host, nodes "search" and "planner" on hosts a and b
// (netstack mode, each on its own LAN behind the router), then from b
// `agentnet ping search` and DNS for search.agents.internal.
func TestAgentnetEndToEnd(t *testing.T) {
	t.Parallel()
	l := New(t)
	bin := BuildAgentnet(t)
	r := l.AddRouter("r")
	coord, a, b := r.AddHost("coord"), r.AddHost("a"), r.AddHost("b")
	dir := t.TempDir()

	coordData := filepath.Join(dir, "coord")
	cp := coord.Start(t, bin, "coordinator", "--listen", coord.Addr.String()+":8443", "--data", coordData)
	if _, err := cp.WaitLine(regexp.MustCompile(`^coordinator at https://`+regexp.QuoteMeta(coord.Addr.String())+`:8443`), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(coord.Run(t, bin, "token", "create", "--admin", filepath.Join(coordData, "admin.cred"), "--reusable", "--ttl", "10m"))
	if token == "" || strings.ContainsAny(token, " \n") {
		t.Fatalf("token create printed %q", token)
	}

	upRE := regexp.MustCompile(`^node (\S+) up: (\S+) `)
	startNode := func(h *Host, name string) (state string, ip netip.Addr) {
		t.Helper()
		state = filepath.Join(dir, name)
		p := h.Start(t, bin, "node", "--token", token, "--name", name, "--state", state,
			"--listen", h.Addr.String()+":41641", "--dns-listen", "127.0.0.1:53")
		m, err := p.WaitLine(upRE, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m[1] != name {
			t.Fatalf("node came up as %q, want %q", m[1], name)
		}
		ip, err = netip.ParseAddr(m[2])
		if err != nil || !netip.MustParsePrefix("100.64.0.0/10").Contains(ip) {
			t.Fatalf("node %s overlay address %q (%v), want 100.x", name, m[2], err)
		}
		if _, err := p.WaitLine(regexp.MustCompile(`^dns on 127\.0\.0\.1:53`), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		return state, ip
	}
	_, searchIP := startNode(a, "search")
	planner, _ := startNode(b, "planner")

	// Ping through the tunnel, retrying while the planner learns the map.
	start := time.Now()
	var out, errOut string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		var err error
		out, errOut, err = b.Output(ctx, bin, "ping", "--state", planner, "--count", "2", "search")
		cancel()
		if err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("agentnet ping search from b: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("ping after %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "pong from search ("+searchIP.String()+")") {
		t.Errorf("ping output lacks pong from search (%s):\n%s", searchIP, out)
	}
	// The path goes to a's lab address, never anything of the machine's.
	if !strings.Contains(out, a.Addr.String()+":41641") {
		t.Errorf("ping did not go to a's lab endpoint %s:41641:\n%s", a.Addr, out)
	}

	if _, err := exec.LookPath("dig"); err != nil {
		t.Log("dig not installed: skipping the DNS checks")
		return
	}
	ans := strings.TrimSpace(b.Run(t, "dig", "+short", "+time=2", "+tries=2", "@127.0.0.1", "search.agents.internal"))
	if ans != searchIP.String() {
		t.Errorf("dig @127.0.0.1 search.agents.internal = %q, want %s", ans, searchIP)
	}
	// The same through the namespace's own resolv.conf.
	b.WriteResolvConf(t, "127.0.0.1")
	ans = strings.TrimSpace(b.Run(t, "dig", "+short", "+time=2", "+tries=2", "search.agents.internal"))
	if ans != searchIP.String() {
		t.Errorf("dig via /etc/netns resolv.conf: %q, want %s", ans, searchIP)
	}
}
