package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

const cliPolicy = `groups:
  planners: [planner, tag:planning]
rules:
  - name: planners-to-search
    from: [group:planners]
    to: [search, tag:search]
    ports: [tcp:8080, tcp:9000-9100, udp:53, icmp]
tests:
  - {from: planner, to: "search:8080", expect: allow}
  - {from: search, to: "planner:22", expect: deny}
`

// runCLI runs agentnet in-process and returns exit code, stdout, stderr.
func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestPolicyCheckOffline(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, "policy.yaml", cliPolicy)
	code, out, errs := runCLI("policy", "check", good)
	if code != exitOK || !strings.Contains(out, "policy.yaml: valid: 1 groups, 1 rules; tests: 2 passed, 0 failed, 0 skipped") {
		t.Errorf("check good: exit %d\n%s%s", code, out, errs)
	}

	bad := writeFile(t, "bad.yaml", strings.Replace(cliPolicy, "group:planners", "group:planer", 1))
	code, out, errs = runCLI("policy", "check", bad)
	if code != exitFailure || !strings.Contains(errs, `bad.yaml:5: rule 1 (planners-to-search): unknown group "planer"`) {
		t.Errorf("check bad: exit %d\n%s%s", code, out, errs)
	}

	// writer is not a planner by name; whether it is one by tag is only
	// known with --nodes.
	withTag := writeFile(t, "tagged.yaml", cliPolicy+"  - {name: writer plans, from: writer, to: \"search:8080\", expect: allow}\n")
	code, out, errs = runCLI("policy", "check", withTag)
	if code != exitOK || !strings.Contains(out, `test 3 "writer plans" (writer -> search:8080/tcp): skipped: depends on tags of writer`) {
		t.Errorf("offline skip: exit %d\n%s%s", code, out, errs)
	}
	nodes := writeFile(t, "nodes.json", `[{"name":"writer","tags":["tag:planning"]},{"name":"search","did":"ignored"}]`)
	code, out, errs = runCLI("policy", "check", withTag, "--nodes", nodes)
	if code != exitOK || !strings.Contains(out, "3 passed, 0 failed, 0 skipped") {
		t.Errorf("with --nodes (tagged): exit %d\n%s%s", code, out, errs)
	}
	nodes = writeFile(t, "nodes2.json", `[{"name":"writer"}]`)
	code, out, errs = runCLI("policy", "check", "--nodes", nodes, withTag)
	if code != exitFailure || !strings.Contains(out, `tagged.yaml:11: test 3 "writer plans" (writer -> search:8080/tcp): expected allow, got deny`) {
		t.Errorf("with --nodes (untagged): exit %d\n%s%s", code, out, errs)
	}

	for _, args := range [][]string{{"policy"}, {"policy", "frob"}, {"policy", "check"}, {"policy", "check", good, "extra"}} {
		if code, _, _ := runCLI(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want usage", args, code)
		}
	}
	if code, _, errs := runCLI("policy", "check", filepath.Join(dir, "missing.yaml")); code != exitFailure || !strings.Contains(errs, "missing.yaml") {
		t.Errorf("missing file: exit %d %s", code, errs)
	}
}

// enrollNode enrolls a node named name with a token carrying tags and
// publishes an endpoint, the minimum for it to appear in maps.
func enrollNode(t *testing.T, c *coordinator.Coordinator, name string, tags ...string) {
	t.Helper()
	ctx := context.Background()
	tok, err := adminclient.New(c.AdminCred()).CreateToken(ctx, wire.CreateTokenRequest{Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	var wg [32]byte
	rand.Read(wg[:])
	body, _ := json.Marshal(wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, Token: tok.Token, Name: name,
		WGKey: wire.WGKeyString(wg)})
	req, _ := http.NewRequest(http.MethodPost, c.URL()+wire.PathEnroll, bytes.NewReader(body))
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	wire.SignRequest(req, key, body, time.Now())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: wire.PinnedTLSConfig(c.Pin()), DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enroll %s: %s", name, resp.Status)
	}
}

func TestPolicyCLIAgainstCoordinator(t *testing.T) {
	dir := t.TempDir()
	c, err := coordinator.New(coordinator.Config{DataDir: filepath.Join(dir, "coord"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	admin := c.AdminCredPath()
	enrollNode(t, c, "planner")
	enrollNode(t, c, "search")
	enrollNode(t, c, "writer", "tag:tools")

	code, out, errs := runCLI("why", "planner", "search:8080", "--admin", admin)
	if code != exitOK || strings.TrimSpace(out) != `allow: rule "allow-all" (policy v0)` {
		t.Errorf("why under the default: exit %d %q %s", code, out, errs)
	}
	code, out, _ = runCLI("policy", "get", "--admin", admin)
	if code != exitOK || !strings.Contains(out, "name: allow-all") {
		t.Errorf("get default: exit %d %q", code, out)
	}

	p := writeFile(t, "policy.yaml", cliPolicy)
	code, out, errs = runCLI("policy", "set", p, "--admin", admin, "--by", "alice")
	if code != exitOK || strings.TrimSpace(out) != "policy v1 set: 1 rules, 2 tests passed" {
		t.Fatalf("set: exit %d %q %s", code, out, errs)
	}
	failing := writeFile(t, "failing.yaml", cliPolicy+"  - {name: writer reaches search, from: writer, to: \"search:8080\", expect: allow}\n")
	code, out, errs = runCLI("policy", "set", "--admin", admin, failing)
	if code != exitFailure || !strings.Contains(errs, `failing.yaml:11: test 3 "writer reaches search" (writer -> search:8080/tcp): expected allow, got deny`) {
		t.Errorf("set failing: exit %d %q %s", code, out, errs)
	}
	invalid := writeFile(t, "invalid.yaml", "rules:\n  - {name: a, from: [x], to: [y], ports: [8080]}\n")
	code, _, errs = runCLI("policy", "set", "--admin", admin, invalid)
	if code != exitFailure || !strings.Contains(errs, `invalid.yaml:2: rule 1 (a): port "8080" needs a protocol`) {
		t.Errorf("set invalid: exit %d %s", code, errs)
	}

	code, out, _ = runCLI("why", "planner", "search:8080", "--admin", admin)
	if code != exitOK || strings.TrimSpace(out) != `allow: rule "planners-to-search" (policy v1)` {
		t.Errorf("why allow: exit %d %q", code, out)
	}
	code, out, _ = runCLI("why", "--proto", "udp", "search", "planner:53", "--admin", admin)
	if code != exitOK || strings.TrimSpace(out) != `deny: no rule allows udp/53 from search to planner (default deny, policy v1)` {
		t.Errorf("why deny: exit %d %q", code, out)
	}
	code, out, _ = runCLI("why", "writer", "search", "--proto", "icmp", "--admin", admin)
	if code != exitOK || strings.TrimSpace(out) != `deny: no rule allows icmp from writer to search (default deny, policy v1)` {
		t.Errorf("why icmp: exit %d %q", code, out)
	}
	if code, _, _ := runCLI("why", "planner", "search", "--admin", admin); code != exitUsage {
		t.Errorf("why tcp without port: exit %d, want usage", code)
	}
	if code, _, errs := runCLI("why", "ghost", "search:1", "--admin", admin); code != exitFailure || !strings.Contains(errs, "ghost") {
		t.Errorf("why unknown node: exit %d %s", code, errs)
	}

	code, out, errs = runCLI("node", "tags", "writer", "tag:planning,tag:tools", "--admin", admin)
	if code != exitOK || strings.TrimSpace(out) != "writer: tag:planning,tag:tools" {
		t.Fatalf("node tags: exit %d %q %s", code, out, errs)
	}
	code, out, _ = runCLI("why", "writer", "search:9000", "--admin", admin)
	if code != exitOK || strings.TrimSpace(out) != `allow: rule "planners-to-search" (policy v1)` {
		t.Errorf("why after tagging: exit %d %q", code, out)
	}
	if code, _, _ := runCLI("node", "tags", "writer", "planning", "--admin", admin); code != exitUsage {
		t.Errorf("node tags without tag: prefix: exit %d, want usage", code)
	}
	code, out, _ = runCLI("node", "tags", "writer", "", "--admin", admin)
	if code != exitOK || strings.TrimSpace(out) != "writer: no tags" {
		t.Errorf("clear tags: exit %d %q", code, out)
	}

	// A second version; get prints either one exactly.
	v2 := writeFile(t, "v2.yaml", "rules: []\n")
	if code, out, errs := runCLI("policy", "set", v2, "--admin", admin); code != exitOK || !strings.HasPrefix(out, "policy v2 set") {
		t.Fatalf("set v2: exit %d %q %s", code, out, errs)
	}
	code, out, errs = runCLI("policy", "get", "--admin", admin, "--version", "1")
	if code != exitOK || out != cliPolicy || !strings.Contains(errs, "# policy v1 from policy.yaml") || !strings.Contains(errs, "by alice") {
		t.Errorf("get v1: exit %d %q %q", code, out, errs)
	}
	code, out, _ = runCLI("policy", "get", "--admin", admin, "--json")
	var rec wire.PolicyRecord
	if code != exitOK || json.Unmarshal([]byte(out), &rec) != nil || rec.Version != 2 || rec.Text != "rules: []\n" {
		t.Errorf("get --json: exit %d %q", code, out)
	}
	if code, _, _ := runCLI("policy", "get", "--admin", admin, "--version", "9"); code != exitFailure {
		t.Errorf("get missing version: exit %d", code)
	}
}

// TestPolicyPrunesRealNodes runs real nodes (netstack mode, loopback): once
// a policy lets planner reach only search, planner's map, DNS and dialer
// no longer know writer, and writer's map is empty.
func TestPolicyPrunesRealNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes; skipped in -short")
	}
	dir := t.TempDir()
	c, err := coordinator.New(coordinator.Config{DataDir: filepath.Join(dir, "coord"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ac := adminclient.New(c.AdminCred())
	tok, err := ac.CreateToken(ctx, wire.CreateTokenRequest{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*overlay.Node{}
	for _, name := range []string{"planner", "search", "writer"} {
		n, err := overlay.New(ctx, overlay.Config{StateDir: filepath.Join(dir, name), Token: tok.Token, Name: name,
			ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		nodes[name] = n
	}
	planner := nodes["planner"]
	if _, err := planner.WaitPeer(ctx, "writer"); err != nil {
		t.Fatalf("under the default policy planner should see writer: %v", err)
	}
	if _, err := ac.SetPolicy(ctx, wire.PolicySetRequest{Text: `rules:
  - {name: planner-to-search, from: [planner], to: [search], ports: [tcp:80]}
`}); err != nil {
		t.Fatal(err)
	}
	// Every node applies the new policy (WaitMap wakes on each map).
	for _, name := range []string{"planner", "search", "writer"} {
		if _, err := nodes[name].WaitMap(ctx, func(m *wire.Map) bool { return m.Filter != nil && m.Filter.PolicyVersion == 1 }); err != nil {
			t.Fatalf("policy v1 on %s: %v", name, err)
		}
	}

	m := planner.Map()
	if len(m.Peers) != 1 || m.Peers[0].Name != "search" {
		t.Errorf("planner's peers: %+v", m.Peers)
	}
	if len(m.Filter.Outbound) != 1 || m.Filter.Outbound[0].Rule != "planner-to-search" || len(m.Filter.Inbound) != 0 {
		t.Errorf("planner's filter: %+v", m.Filter)
	}
	if p := nodes["writer"].Map().Peers; len(p) != 0 {
		t.Errorf("writer may reach nobody but its map lists %+v", p)
	}
	if _, err := planner.Resolver().LookupNetIP(ctx, "ip4", "search.agents.internal"); err != nil {
		t.Errorf("planner cannot resolve search: %v", err)
	}
	if ips, err := planner.Resolver().LookupNetIP(ctx, "ip4", "writer.agents.internal"); err == nil {
		t.Errorf("planner still resolves writer: %v", ips)
	}
	if conn, err := planner.Dial(ctx, "tcp", "writer:80"); err == nil {
		conn.Close()
		t.Error("planner dialled writer by name")
	}
}
