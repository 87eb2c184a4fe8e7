package coordinator

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator/policy"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

const planPolicy = `groups:
  planners: [tag:planning]
rules:
  - name: planners-to-search
    from: [group:planners]
    to: [search]
    ports: [tcp:8080, icmp]
tests:
  - {name: planner reaches search, from: planner, to: "search:8080", expect: allow}
  - {from: search, to: "planner:22", expect: deny}
`

// policyNet is a harness with planner (tag:planning), search and writer
// enrolled, each with an open stream.
type policyNet struct {
	*harness
	nodes   map[string]*testNode
	streams map[string]*testStream
}

func newPolicyNet(t *testing.T) *policyNet {
	h := newHarness(t, nil)
	pn := &policyNet{harness: h, nodes: map[string]*testNode{}, streams: map[string]*testStream{}}
	for _, n := range []struct{ name, tag string }{{"planner", "tag:planning"}, {"search", ""}, {"writer", ""}} {
		req := wire.CreateTokenRequest{}
		if n.tag != "" {
			req.Tags = []string{n.tag}
		}
		tn := newTestNode(t, h.c)
		tn.enroll(h.token(req), n.name)
		pn.nodes[n.name] = tn
	}
	for name, tn := range pn.nodes {
		pn.streams[name] = tn.openStream(h.c.PublicKey())
	}
	return pn
}

// addrs returns a node's addresses as filter peers.
func (pn *policyNet) addrs(name string) []string {
	s := pn.nodes[name].self
	return []string{s.IPv4.String() + "/32", s.IPv6.String() + "/128"}
}

func TestPolicyDefaultAllowsAll(t *testing.T) {
	pn := newPolicyNet(t)
	if !strings.Contains(pn.logs.String(), "running the built-in default policy") {
		t.Errorf("no start log about the default policy:\n%s", pn.logs.String())
	}
	rec, err := pn.admin.GetPolicy(context.Background(), 0)
	if err != nil || rec.Version != 0 || rec.Text != policy.DefaultText {
		t.Fatalf("GetPolicy: %+v %v", rec, err)
	}
	m := pn.streams["planner"].waitMap(5*time.Second, "both peers", func(m *wire.Map) bool { return peerNames(m) == "search,writer" })
	want := []wire.FilterRule{{Rule: "allow-all", Peers: []string{pn.c.prefix4.String(), pn.c.ula.String()}}}
	if m.Filter == nil || m.Filter.PolicyVersion != 0 || !equalRules(m.Filter.Inbound, want) || !equalRules(m.Filter.Outbound, want) {
		t.Fatalf("default filter: %+v", m.Filter)
	}
}

func equalRules(a, b []wire.FilterRule) bool {
	return slices.EqualFunc(a, b, func(x, y wire.FilterRule) bool {
		return x.Rule == y.Rule && slices.Equal(x.Peers, y.Peers) && slices.Equal(x.Protos, y.Protos) && slices.Equal(x.Ports, y.Ports)
	})
}

func TestPolicySetPrunesMapsAndCompilesFilters(t *testing.T) {
	pn := newPolicyNet(t)
	ctx := context.Background()
	resp, err := pn.admin.SetPolicy(ctx, wire.PolicySetRequest{Text: planPolicy, Source: "plan.yaml", By: "alice"})
	if err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	if resp.Version != 1 || resp.Rules != 1 || resp.Passed != 2 || len(resp.Skipped) != 0 {
		t.Errorf("SetPolicy response %+v", resp)
	}
	v1 := func(m *wire.Map) bool { return m.Filter != nil && m.Filter.PolicyVersion == 1 }

	pm := pn.streams["planner"].waitMap(5*time.Second, "policy v1", v1)
	if got := peerNames(pm); got != "search" {
		t.Errorf("planner's peers = %q, want only search", got)
	}
	wantOut := []wire.FilterRule{
		{Rule: "planners-to-search", Peers: pn.addrs("search"), Protos: []string{"tcp"}, Ports: []wire.PortRange{{First: 8080, Last: 8080}}},
		{Rule: "planners-to-search", Peers: pn.addrs("search"), Protos: []string{"icmp"}},
	}
	if len(pm.Filter.Inbound) != 0 || !equalRules(pm.Filter.Outbound, wantOut) {
		t.Errorf("planner filter: in %+v out %+v", pm.Filter.Inbound, pm.Filter.Outbound)
	}

	sm := pn.streams["search"].waitMap(5*time.Second, "policy v1", v1)
	if got := peerNames(sm); got != "planner" {
		t.Errorf("search's peers = %q, want only planner", got)
	}
	wantIn := slices.Clone(wantOut)
	for i := range wantIn {
		wantIn[i].Peers = pn.addrs("planner")
	}
	if len(sm.Filter.Outbound) != 0 || !equalRules(sm.Filter.Inbound, wantIn) {
		t.Errorf("search filter: in %+v out %+v", sm.Filter.Inbound, sm.Filter.Outbound)
	}

	wm := pn.streams["writer"].waitMap(5*time.Second, "policy v1", v1)
	if len(wm.Peers) != 0 || len(wm.Filter.Inbound) != 0 || len(wm.Filter.Outbound) != 0 {
		t.Errorf("writer may reach nobody, got peers %q filter %+v", peerNames(wm), wm.Filter)
	}

	rec, err := pn.admin.GetPolicy(ctx, 0)
	if err != nil || rec.Version != 1 || rec.Text != planPolicy || rec.By != "alice" || rec.Source != "plan.yaml" || rec.Created.IsZero() {
		t.Errorf("GetPolicy: %+v %v", rec, err)
	}
	if !strings.Contains(pn.logs.String(), "policy set") {
		t.Error("no log line for the policy change")
	}
}

func TestPolicySetRefused(t *testing.T) {
	pn := newPolicyNet(t)
	ctx := context.Background()
	serial := pn.c.snap.Load().serial

	_, err := pn.admin.SetPolicy(ctx, wire.PolicySetRequest{Text: "rules:\n  - {name: a, from: [group:planer], to: [search]}\n", Source: "p.yaml"})
	var ae *wire.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Code != wire.CodePolicyInvalid ||
		!strings.Contains(ae.Message, `p.yaml:2: rule 1 (a): unknown group "planer"`) {
		t.Fatalf("invalid policy: %v", err)
	}

	// writer is not a planner, so this test fails against the current nodes.
	failing := planPolicy + "  - {name: writer too, from: writer, to: \"search:8080\", expect: allow}\n"
	_, err = pn.admin.SetPolicy(ctx, wire.PolicySetRequest{Text: failing})
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Code != wire.CodePolicyTestsFailed ||
		!strings.Contains(ae.Message, `policy.yaml:11: test 3 "writer too" (writer -> search:8080/tcp): expected allow, got deny`) ||
		!strings.Contains(ae.Message, "1 of its 3 tests fail") {
		t.Fatalf("failing tests: %v", err)
	}
	if s := pn.c.snap.Load().serial; s != serial {
		t.Errorf("a refused policy bumped the serial %d → %d", serial, s)
	}
	if rec, err := pn.admin.GetPolicy(ctx, 0); err != nil || rec.Version != 0 {
		t.Errorf("a refused policy was stored: %+v %v", rec, err)
	}

	// A test naming a node that is not enrolled, depending on its tags, is
	// skipped, not failed.
	skipping := planPolicy + "  - {from: ghost, to: \"search:8080\", expect: allow}\n"
	resp, err := pn.admin.SetPolicy(ctx, wire.PolicySetRequest{Text: skipping})
	if err != nil || len(resp.Skipped) != 1 || !strings.Contains(resp.Skipped[0], "ghost") {
		t.Fatalf("skipping test: %+v %v", resp, err)
	}
}

func TestPolicyVersions(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	texts := []string{"rules: []\n", planPolicy, policy.DefaultText}
	for i, text := range texts {
		resp, err := h.admin.SetPolicy(ctx, wire.PolicySetRequest{Text: text})
		if err != nil || resp.Version != uint64(i+1) {
			t.Fatalf("set %d: %+v %v", i+1, resp, err)
		}
	}
	for i, text := range texts {
		rec, err := h.admin.GetPolicy(ctx, uint64(i+1))
		if err != nil || rec.Version != uint64(i+1) || rec.Text != text {
			t.Errorf("get version %d: %+v %v", i+1, rec, err)
		}
	}
	if rec, err := h.admin.GetPolicy(ctx, 0); err != nil || rec.Version != 3 {
		t.Errorf("current: %+v %v", rec, err)
	}
	var ae *wire.APIError
	if _, err := h.admin.GetPolicy(ctx, 99); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("version 99: %v", err)
	}

	// Versions and the policy in force survive a restart.
	h.c.Close()
	cfg := h.cfg
	c2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if v := c2.snap.Load().policy.rec.Version; v != 3 {
		t.Errorf("after restart the policy in force is v%d, want v3", v)
	}
	rec, err := adminclient.New(c2.AdminCred()).GetPolicy(ctx, 2)
	if err != nil || rec.Text != planPolicy {
		t.Errorf("after restart, v2: %+v %v", rec, err)
	}
}

func TestWhy(t *testing.T) {
	pn := newPolicyNet(t)
	ctx := context.Background()
	if _, err := pn.admin.SetPolicy(ctx, wire.PolicySetRequest{Text: planPolicy}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		req   wire.WhyRequest
		allow bool
		rule  string
	}{
		{wire.WhyRequest{From: "planner", To: "search", Port: 8080}, true, "planners-to-search"},
		{wire.WhyRequest{From: "planner", To: "search", Proto: "icmp"}, true, "planners-to-search"},
		{wire.WhyRequest{From: "planner", To: "search", Proto: "udp", Port: 8080}, false, ""},
		{wire.WhyRequest{From: "search", To: "planner", Port: 8080}, false, ""},
		{wire.WhyRequest{From: "writer", To: "search", Port: 8080}, false, ""},
	}
	for _, tc := range cases {
		resp, err := pn.admin.Why(ctx, tc.req)
		if err != nil || resp.Allow != tc.allow || resp.Rule != tc.rule || resp.Version != 1 {
			t.Errorf("Why(%+v) = %+v, %v", tc.req, resp, err)
		}
	}
	var ae *wire.APIError
	if _, err := pn.admin.Why(ctx, wire.WhyRequest{From: "ghost", To: "search", Port: 1}); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("unknown node: %v", err)
	}
	if _, err := pn.admin.Why(ctx, wire.WhyRequest{From: "planner", To: "search"}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("tcp without port: %v", err)
	}
}

func TestSetTagsPushesMaps(t *testing.T) {
	pn := newPolicyNet(t)
	ctx := context.Background()
	if _, err := pn.admin.SetPolicy(ctx, wire.PolicySetRequest{Text: planPolicy}); err != nil {
		t.Fatal(err)
	}
	pn.streams["writer"].waitMap(5*time.Second, "policy v1 with no peers", func(m *wire.Map) bool {
		return m.Filter != nil && m.Filter.PolicyVersion == 1 && len(m.Peers) == 0
	})
	n, err := pn.admin.SetNodeTags(ctx, "writer", []string{"tag:planning", "tag:x", "tag:planning"})
	if err != nil || !slices.Equal(n.Tags, []string{"tag:planning", "tag:x"}) {
		t.Fatalf("SetNodeTags: %+v %v", n, err)
	}
	wm := pn.streams["writer"].waitMap(5*time.Second, "search as a peer", func(m *wire.Map) bool { return peerNames(m) == "search" })
	if len(wm.Filter.Outbound) != 2 || !slices.Equal(wm.Filter.Outbound[0].Peers, pn.addrs("search")) || !slices.Equal(wm.Self.Tags, n.Tags) {
		t.Errorf("writer's map after tagging: self tags %v filter %+v", wm.Self.Tags, wm.Filter)
	}
	sm := pn.streams["search"].waitMap(5*time.Second, "writer as a peer", func(m *wire.Map) bool {
		return m.Filter.PolicyVersion == 1 && peerNames(m) == "planner,writer"
	})
	if len(sm.Filter.Inbound) != 2 || !slices.Equal(sm.Filter.Inbound[0].Peers, slices.Concat(pn.addrs("planner"), pn.addrs("writer"))) {
		t.Errorf("search's filter after tagging writer: %+v", sm.Filter)
	}

	// Removing the tags takes writer out again.
	if _, err := pn.admin.SetNodeTags(ctx, "writer", nil); err != nil {
		t.Fatal(err)
	}
	pn.streams["search"].waitMap(5*time.Second, "writer gone", func(m *wire.Map) bool { return peerNames(m) == "planner" })

	var ae *wire.APIError
	if _, err := pn.admin.SetNodeTags(ctx, "writer", []string{"Planning"}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("bad tag: %v", err)
	}
	if _, err := pn.admin.SetNodeTags(ctx, "ghost", []string{"tag:a"}); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("unknown node: %v", err)
	}
}

func TestPolicyAPINeedsAdmin(t *testing.T) {
	h := newHarness(t, nil)
	bad := adminclient.New(wire.AdminCred{URL: h.c.URL(), Pin: h.c.Pin(), Secret: "wrong"})
	ctx := context.Background()
	var ae *wire.APIError
	for name, call := range map[string]func() error{
		"set":  func() error { _, err := bad.SetPolicy(ctx, wire.PolicySetRequest{Text: "rules: []\n"}); return err },
		"get":  func() error { _, err := bad.GetPolicy(ctx, 0); return err },
		"why":  func() error { _, err := bad.Why(ctx, wire.WhyRequest{From: "a", To: "b", Port: 1}); return err },
		"tags": func() error { _, err := bad.SetNodeTags(ctx, "a", nil); return err },
	} {
		if err := call(); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Errorf("%s without the admin secret: %v", name, err)
		}
	}
	if rec, err := h.admin.GetPolicy(ctx, 0); err != nil || rec.Version != 0 {
		t.Errorf("policy changed by an unauthenticated call: %+v %v", rec, err)
	}
}

// TestStoredPolicyThatNoLongerParsesFailsClosed: a stored version the
// parser refuses (say, after an upgrade that validates more strictly) must
// not crash the coordinator nor fall back to allow-all: nothing is allowed
// and the error is logged, until an admin sets a valid policy.
func TestStoredPolicyThatNoLongerParsesFailsClosed(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenBolt(dir + "/" + fileDB)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(func(tx store.Tx) error {
		_, err := tx.AddPolicy(wire.PolicyRecord{Text: "rules: [oops]\n", Source: "old.yaml"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	h := newHarness(t, func(c *Config) { c.DataDir = dir })
	if !strings.Contains(h.logs.String(), "stored policy does not parse") {
		t.Errorf("no error log for the broken stored policy:\n%s", h.logs.String())
	}
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a.enroll(tok, "a")
	resp := b.enroll(tok, "b")
	m := verify(t, resp.Map, h.c.PublicKey())
	if len(m.Peers) != 0 || m.Filter == nil || len(m.Filter.Inbound)+len(m.Filter.Outbound) != 0 || m.Filter.PolicyVersion != 1 {
		t.Errorf("broken policy must allow nothing: peers %q filter %+v", peerNames(m), m.Filter)
	}
	if _, err := h.admin.SetPolicy(context.Background(), wire.PolicySetRequest{Text: policy.DefaultText}); err != nil {
		t.Fatal(err)
	}
	if m := b.update(netip.MustParseAddrPort("127.0.0.1:41642")); peerNames(m) != "a" || m.Filter.PolicyVersion != 2 {
		t.Errorf("after a valid policy: peers %q version %d", peerNames(m), m.Filter.PolicyVersion)
	}
}
