package coordinator

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// postWGUpdate sends an update with wg and returns status and refusal.
func (n *testNode) postWGUpdate(wg string) (int, wire.ErrorResponse) {
	n.t.Helper()
	status, _, er := n.do(http.MethodPost, wire.PathUpdate, mustJSON(n.t, wire.UpdateRequest{WGKey: wg}), nil)
	return status, er
}

var epA = netip.MustParseAddrPort("127.0.0.1:41641")

func newWGKey() string {
	var k [32]byte
	rand.Read(k[:])
	return wire.WGKeyString(k)
}

func TestRevokeNode(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	sa := a.openStream(h.c.PublicKey())
	sb := b.openStream(h.c.PublicKey())
	sa.waitMap(time.Second, "bravo", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return ok })
	sb.waitMap(time.Second, "alpha", func(m *wire.Map) bool { _, ok := m.Peer("alpha"); return ok })

	rec, err := h.admin.RevokeNode(context.Background(), "alpha", "laptop stolen")
	if err != nil {
		t.Fatalf("RevokeNode: %v", err)
	}
	if rec.State != wire.StateRevoked || rec.Node.DID != a.did || rec.Reason != "laptop stolen" || len(rec.WGKeys) != 1 || rec.WGKeys[0] != a.wg {
		t.Errorf("revocation record = %+v", rec)
	}
	sa.waitEnd(time.Second)
	sb.waitMap(time.Second, "alpha gone", func(m *wire.Map) bool { _, ok := m.Peer("alpha"); return !ok })

	// Every further request of the revoked identity is refused, clearly.
	status, er := a.postWGUpdate(a.wg)
	if status != http.StatusForbidden || er.Code != wire.CodeNodeRevoked ||
		!strings.Contains(er.Error, "revoked by an admin") || !strings.Contains(er.Error, "new identity") || !strings.Contains(er.Error, "laptop stolen") {
		t.Errorf("update after revoke: %d %s %q", status, er.Code, er.Error)
	}
	if status, _, er := a.do(http.MethodGet, wire.PathStream, nil, nil); status != http.StatusForbidden || er.Code != wire.CodeNodeRevoked {
		t.Errorf("stream after revoke: %d %s", status, er.Code)
	}
	// Its identity can never re-enroll, not even with a valid token, and
	// under any WireGuard key.
	a.wg = newWGKey()
	if _, status, er := a.tryEnroll(tok, "alpha"); status != http.StatusForbidden || er.Code != wire.CodeNodeRevoked {
		t.Errorf("re-enroll of revoked identity: %d %s %q", status, er.Code, er.Error)
	}
	// Its WireGuard key is refused from anyone.
	thief := newTestNode(t, h.c)
	thief.wg = rec.WGKeys[0]
	if _, status, er := thief.tryEnroll(tok, "thief"); status != http.StatusForbidden || er.Code != wire.CodeKeyRetired {
		t.Errorf("enroll with revoked WG key: %d %s %q", status, er.Code, er.Error)
	}
	if status, er := b.postWGUpdate(rec.WGKeys[0]); status != http.StatusForbidden || er.Code != wire.CodeKeyRetired {
		t.Errorf("update to revoked WG key: %d %s", status, er.Code)
	}
	// The name is free for a new identity.
	newTestNode(t, h.c).enroll(tok, "alpha")

	var ae *wire.APIError
	if _, err := h.admin.RevokeNode(context.Background(), "nobody", ""); !errors.As(err, &ae) || ae.Code != wire.CodeNotFound {
		t.Errorf("revoke unknown node = %v, want not_found", err)
	}
	recs, err := h.admin.Revocations(context.Background())
	if err != nil || len(recs) != 1 || recs[0].Node.Name != "alpha" {
		t.Errorf("Revocations = %+v, %v", recs, err)
	}
	if st := h.c.Stats(); st.Refused[wire.CodeNodeRevoked] < 3 || st.Refused[wire.CodeKeyRetired] < 2 {
		t.Errorf("refusal counters %v", st.Refused)
	}
}

// A node enrolled with a token that is revoked later keeps working: the
// token was used once, at enrollment.
func TestRevokedTokenLeavesItsNodes(t *testing.T) {
	h := newHarness(t, nil)
	resp, err := h.admin.CreateToken(context.Background(), wire.CreateTokenRequest{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	a := newTestNode(t, h.c)
	a.enroll(resp.Token, "alpha")
	if err := h.c.revokeToken(resp.ID); err != nil {
		t.Fatal(err)
	}
	if status, er := a.postWGUpdate(a.wg); status != http.StatusOK {
		t.Errorf("update of a node whose token was revoked: %d %s %q", status, er.Code, er.Error)
	}
	if _, status, er := newTestNode(t, h.c).tryEnroll(resp.Token, "bravo"); status != http.StatusUnauthorized || er.Code != wire.CodeTokenRevoked {
		t.Errorf("enroll with revoked token: %d %s", status, er.Code)
	}
}

func TestKeyRotationRetiresOldKey(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	a.update(epA)
	sb := b.openStream(h.c.PublicKey())
	sb.waitMap(time.Second, "alpha", func(m *wire.Map) bool { _, ok := m.Peer("alpha"); return ok })

	old := a.wg
	a.wg = newWGKey()
	a.update(epA)
	sb.waitMap(time.Second, "alpha's new key", func(m *wire.Map) bool { p, ok := m.Peer("alpha"); return ok && p.WGKey == a.wg })

	// The old key is refused: in an update of its own node, an update of
	// another node, and an enrollment.
	if status, er := a.postWGUpdate(old); status != http.StatusForbidden || er.Code != wire.CodeKeyRetired || !strings.Contains(er.Error, "retired") {
		t.Errorf("update back to the old key: %d %s %q", status, er.Code, er.Error)
	}
	if status, er := b.postWGUpdate(old); status != http.StatusForbidden || er.Code != wire.CodeKeyRetired {
		t.Errorf("other node takes the old key: %d %s", status, er.Code)
	}
	c := newTestNode(t, h.c)
	c.wg = old
	if _, status, er := c.tryEnroll(tok, "charlie"); status != http.StatusForbidden || er.Code != wire.CodeKeyRetired {
		t.Errorf("enroll with retired key: %d %s", status, er.Code)
	}
	// Re-enrollment of the same identity with a fresh key rotates too.
	prev := a.wg
	a.wg = newWGKey()
	a.enroll("", "alpha")
	if status, er := a.postWGUpdate(prev); status != http.StatusForbidden || er.Code != wire.CodeKeyRetired {
		t.Errorf("key replaced by re-enrollment still accepted: %d %s", status, er.Code)
	}
	// Revoking the node records every key it used.
	rec, err := h.admin.RevokeNode(context.Background(), "alpha", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.WGKeys) != 3 {
		t.Errorf("revocation lists %d keys, want 3 (current and two retired)", len(rec.WGKeys))
	}
}

// TestNodeExpiry runs in a synctest bubble over in-memory connections: the
// coordinator's clock and its sweeper's ticker are the bubble's fake time,
// so the hour of the node's TTL passes at once and the sweep is exact.
func TestNodeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Keepalives are not under test; at their 10 s default an hour of
		// them would fill the test streams' buffers.
		h := newPipeHarness(t, func(c *Config) { c.keepalive = 2 * time.Hour })
		short := h.token(wire.CreateTokenRequest{Reusable: true, NodeTTLSeconds: 3600})
		forever := h.token(wire.CreateTokenRequest{Reusable: true})
		a, b := newTestNode(t, h.c), newTestNode(t, h.c)
		enrolled := time.Now()
		resp := a.enroll(short, "alpha")
		if want := enrolled.Add(time.Hour); !resp.Node.Expires.Equal(want) {
			t.Errorf("Expires = %v, want %v", resp.Node.Expires, want)
		}
		b.enroll(forever, "bravo")
		a.update(epA)
		sa := a.openStream(h.c.PublicKey())
		sb := b.openStream(h.c.PublicKey())
		sb.waitMap(time.Second, "alpha", func(m *wire.Map) bool { _, ok := m.Peer("alpha"); return ok })

		time.Sleep(time.Until(resp.Node.Expires) - time.Nanosecond) // fake time
		if status, er := a.postWGUpdate(a.wg); status != http.StatusOK {
			t.Fatalf("update just before expiry: %d %s", status, er.Code)
		}
		synctest.Wait()
		if n := h.nodeCount(); n != 2 {
			t.Fatalf("node count %d just before expiry, want 2", n)
		}
		// The sweeper drops it without any request from it, at its first
		// tick after the expiry.
		time.Sleep(time.Until(resp.Node.Expires) + expirySweepInterval) // fake time
		synctest.Wait()
		sb.waitMap(time.Nanosecond, "alpha expired", func(m *wire.Map) bool { _, ok := m.Peer("alpha"); return !ok })
		sa.waitEnd(time.Nanosecond)
		status, er := a.postWGUpdate(a.wg)
		if status != http.StatusForbidden || er.Code != wire.CodeNodeExpired || !strings.Contains(er.Error, "--state NEWDIR") || !strings.Contains(er.Error, "expired") {
			t.Errorf("update after expiry: %d %s %q", status, er.Code, er.Error)
		}
		if _, status, er := a.tryEnroll(forever, "alpha"); status != http.StatusForbidden || er.Code != wire.CodeNodeExpired {
			t.Errorf("re-enroll after expiry: %d %s", status, er.Code)
		}
		recs, err := h.admin.Revocations(context.Background())
		if err != nil || len(recs) != 1 || recs[0].State != wire.StateExpired {
			t.Errorf("Revocations = %+v, %v", recs, err)
		}
		if h.nodeCount() != 1 {
			t.Errorf("node count %d, want 1", h.nodeCount())
		}
	})
}

// A node calling in after its expiry is refused at once, before any sweep.
func TestExpiredNodeRefusedOnRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, nil)
		h.c.stopSweeper() // only the request path may expire it here
		h.c.sweep = sweeper{}
		a := newTestNode(t, h.c)
		a.enroll(h.token(wire.CreateTokenRequest{NodeTTLSeconds: 60}), "alpha")
		time.Sleep(time.Minute) // fake time
		if status, er := a.postWGUpdate(a.wg); status != http.StatusForbidden || er.Code != wire.CodeNodeExpired {
			t.Errorf("update at expiry: %d %s %q", status, er.Code, er.Error)
		}
		if h.nodeCount() != 0 {
			t.Errorf("expired node still listed")
		}
		if _, status, er := a.tryEnroll("", "alpha"); status != http.StatusForbidden || er.Code != wire.CodeNodeExpired {
			t.Errorf("re-enroll: %d %s", status, er.Code)
		}
	})
}
