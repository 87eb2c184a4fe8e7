package coordinator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"github.com/agentnet/agentnet/internal/clocktest"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func TestEnrollHappyPath(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true, Tags: []string{"tag:web"}})
	var nodes []*testNode
	var resps []wire.EnrollResponse
	for i := range 3 {
		n := newTestNode(t, h.c)
		resps = append(resps, n.enroll(tok, fmt.Sprintf("agent-%d", i)))
		nodes = append(nodes, n)
	}
	ula := h.c.ula
	seen4, seen6 := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for i, r := range resps {
		n := r.Node
		if n.DID != nodes[i].did {
			t.Errorf("node %d DID = %s, want %s", i, n.DID, nodes[i].did)
		}
		if !wire.DefaultPrefix4.Contains(n.IPv4) || seen4[n.IPv4] || n.IPv4 == wire.DefaultDNSIP {
			t.Errorf("node %d IPv4 %v not a distinct address in %v", i, n.IPv4, wire.DefaultPrefix4)
		}
		if !ula.Contains(n.IPv6) || seen6[n.IPv6] {
			t.Errorf("node %d IPv6 %v not a distinct address in %v", i, n.IPv6, ula)
		}
		seen4[n.IPv4], seen6[n.IPv6] = true, true
		if len(n.Tags) != 1 || n.Tags[0] != "tag:web" {
			t.Errorf("node %d tags = %v, want [tag:web]", i, n.Tags)
		}
		if string(r.CoordinatorKey) != string(h.c.PublicKey()) {
			t.Errorf("node %d: CoordinatorKey differs from PublicKey()", i)
		}
	}
	// The last node's map lists the two others; earlier maps are older.
	m := verify(t, resps[2].Map, h.c.PublicKey())
	if m.Self.Name != "agent-2" || peerNames(m) != "agent-0,agent-1" {
		t.Errorf("map self=%s peers=%s, want agent-2 with agent-0,agent-1", m.Self.Name, peerNames(m))
	}
	if m.Prefix6 != ula || m.Prefix4 != wire.DefaultPrefix4 || m.DNSIP != wire.DefaultDNSIP || m.Domain != wire.DefaultDomain {
		t.Errorf("map address plan = %v %v %v %s", m.Prefix4, m.Prefix6, m.DNSIP, m.Domain)
	}
	// Everyone's current map lists the two others.
	for i, n := range nodes {
		m := n.update(netip.MustParseAddrPort("127.0.0.1:41641"))
		if len(m.Peers) != 2 {
			t.Errorf("node %d sees peers %s, want 2", i, peerNames(m))
		}
	}
	if _, err := resps[0].Map.Verify(newTestNode(t, h.c).key.Public().(ed25519.PublicKey)); err == nil {
		t.Error("map verified with the wrong key")
	}
	if got := h.c.Stats().Enrolled; got != 3 {
		t.Errorf("Stats().Enrolled = %d, want 3", got)
	}
}

func TestReenrollSameIdentity(t *testing.T) {
	h := newHarness(t, nil)
	n := newTestNode(t, h.c)
	first := n.enroll(h.token(wire.CreateTokenRequest{}), "alpha")

	// No token, another name asked, new WireGuard key: same name and
	// addresses, new key.
	n.wg = wire.WGKeyString([32]byte{1, 2, 3})
	again := n.enroll("", "beta")
	if again.Node.Name != "alpha" || again.Node.IPv4 != first.Node.IPv4 || again.Node.IPv6 != first.Node.IPv6 {
		t.Errorf("re-enroll gave %s %v %v, want alpha %v %v", again.Node.Name, again.Node.IPv4, again.Node.IPv6, first.Node.IPv4, first.Node.IPv6)
	}
	if again.Node.WGKey != n.wg {
		t.Errorf("re-enroll did not update the WireGuard key")
	}
	if h.nodeCount() != 1 {
		t.Errorf("node count %d after re-enroll, want 1", h.nodeCount())
	}
	if got := h.c.Stats().Reenrolled; got != 1 {
		t.Errorf("Stats().Reenrolled = %d, want 1", got)
	}
}

func TestNameTaken(t *testing.T) {
	h := newHarness(t, nil)
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(h.token(wire.CreateTokenRequest{}), "alpha")
	tok := h.token(wire.CreateTokenRequest{})
	_, status, er := b.tryEnroll(tok, "alpha")
	if status != http.StatusConflict || er.Code != wire.CodeNameTaken || !strings.Contains(er.Error, `"alpha" is already taken`) {
		t.Fatalf("got %d %s %q, want 409 name_taken", status, er.Code, er.Error)
	}
	// The refusal rolled back the whole enrollment: the one-use token is
	// still unused and no address was consumed.
	resp := b.enroll(tok, "bravo")
	if want := netip.MustParseAddr("100.96.0.2"); resp.Node.IPv4 != want {
		t.Errorf("bravo got %v, want %v (no address lost to the refused enrollment)", resp.Node.IPv4, want)
	}
}

func TestTokenRefusals(t *testing.T) {
	clock := clocktest.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	h := newHarness(t, func(c *Config) { c.Now = clock.Now })
	used := h.token(wire.CreateTokenRequest{})
	newTestNode(t, h.c).enroll(used, "first")
	expired := h.token(wire.CreateTokenRequest{TTLSeconds: 60})
	unknown, err := wire.ParseToken(h.token(wire.CreateTokenRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	unknown.Secret = wire.NewSecret()

	tests := []struct {
		name    string
		token   string
		advance time.Duration
		status  int
		code    string
		msg     string
	}{
		{"malformed", "agentnet-join-v1.!!!", 0, http.StatusBadRequest, wire.CodeBadToken, "not base64url"},
		{"empty", "", 0, http.StatusBadRequest, wire.CodeBadToken, "empty"},
		{"unknown secret", unknown.String(), 0, http.StatusUnauthorized, wire.CodeBadToken, "not known to this coordinator"},
		{"used one-use", used, 0, http.StatusUnauthorized, wire.CodeTokenUsed, "already used"},
		{"expired", expired, 2 * time.Minute, http.StatusUnauthorized, wire.CodeTokenExpired, "expired at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Add(tt.advance)
			before := h.c.Stats().Refused[tt.code]
			count := h.nodeCount()
			n := newTestNode(t, h.c)
			_, status, er := n.tryEnroll(tt.token, "x-"+strings.ReplaceAll(tt.name, " ", "-"))
			if status != tt.status || er.Code != tt.code || !strings.Contains(er.Error, tt.msg) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", status, er.Code, er.Error, tt.status, tt.code, tt.msg)
			}
			if got := h.c.Stats().Refused[tt.code]; got != before+1 {
				t.Errorf("Refused[%s] = %d, want %d", tt.code, got, before+1)
			}
			if !strings.Contains(h.logs.String(), "reason="+tt.code) || !strings.Contains(h.logs.String(), n.did) {
				t.Errorf("no refusal log line with reason=%s for %s", tt.code, n.did)
			}
			if got := h.nodeCount(); got != count {
				t.Errorf("node count %d after refusal, want %d", got, count)
			}
		})
	}
}

func TestReusableToken(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	newTestNode(t, h.c).enroll(tok, "one")
	newTestNode(t, h.c).enroll(tok, "two")
	if h.nodeCount() != 2 {
		t.Fatalf("node count %d, want 2", h.nodeCount())
	}
}

func TestCreateTokenValidation(t *testing.T) {
	h := newHarness(t, nil)
	for _, req := range []wire.CreateTokenRequest{
		{Tags: []string{"web"}},
		{Tags: []string{"tag:Web"}},
		{TTLSeconds: -1},
	} {
		_, err := h.admin.CreateToken(context.Background(), req)
		var ae *wire.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != wire.CodeBadRequest {
			t.Errorf("CreateToken(%+v) = %v, want 400 bad_request", req, err)
		}
	}
	resp, err := h.admin.CreateToken(context.Background(), wire.CreateTokenRequest{TTLSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := wire.ParseToken(resp.Token)
	if err != nil || tok.URL != h.c.URL() || tok.Pin != h.c.Pin() || tok.ID != resp.ID {
		t.Fatalf("token %+v (%v) does not carry URL, pin and id", tok, err)
	}
	if d := time.Until(resp.Expires); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expires in %v, want 1h", d)
	}
}

func TestWrongAdminSecret(t *testing.T) {
	h := newHarness(t, nil)
	cred := h.c.AdminCred()
	cred.Secret = "not-the-secret"
	_, err := adminclient.New(cred).Nodes(context.Background())
	var ae *wire.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Code != wire.CodeUnauthorized {
		t.Fatalf("Nodes with wrong secret = %v, want 401 unauthorized", err)
	}
	if h.c.Stats().Refused[wire.CodeUnauthorized] != 1 || !strings.Contains(h.logs.String(), "admin secret missing or wrong") {
		t.Errorf("wrong admin secret not counted and logged: %v", h.c.Stats().Refused)
	}
}

func TestPoolExhausted(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Prefix4 = netip.MustParsePrefix("10.9.0.0/30") })
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	newTestNode(t, h.c).enroll(tok, "a")
	newTestNode(t, h.c).enroll(tok, "b")
	_, status, er := newTestNode(t, h.c).tryEnroll(tok, "c")
	if status != http.StatusServiceUnavailable || er.Code != codeNoAddresses || !strings.Contains(er.Error, "10.9.0.0/30") {
		t.Fatalf("third enrollment in a /30: %d %s %q, want 503 %s", status, er.Code, er.Error, codeNoAddresses)
	}
	if h.nodeCount() != 2 {
		t.Errorf("node count %d, want 2", h.nodeCount())
	}
}

func TestDeleteNode(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	sa := a.openStream(h.c.PublicKey())
	sb := b.openStream(h.c.PublicKey())
	sa.waitMap(time.Second, "bravo", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return ok })

	if err := h.admin.DeleteNode(context.Background(), "bravo"); err != nil {
		t.Fatalf("DeleteNode: %v", err)
	}
	sa.waitMap(time.Second, "bravo gone", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return !ok })
	sb.waitEnd(time.Second)
	var ae *wire.APIError
	if err := h.admin.DeleteNode(context.Background(), "bravo"); !errors.As(err, &ae) || ae.Code != wire.CodeNotFound {
		t.Errorf("second DeleteNode = %v, want not_found", err)
	}
	// The removed identity is no longer enrolled; its name is free again.
	if status, _, er := b.do(http.MethodPost, wire.PathUpdate, mustJSON(t, wire.UpdateRequest{WGKey: b.wg}), nil); status != http.StatusUnauthorized || !strings.Contains(er.Error, "not enrolled") {
		t.Errorf("update after removal: %d %q, want 401 not enrolled", status, er.Error)
	}
	newTestNode(t, h.c).enroll(tok, "bravo")
	if h.nodeCount() != 2 {
		t.Errorf("node count %d, want 2", h.nodeCount())
	}
}
