package coordinator

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/relay"
	"github.com/agentnet/agentnet/relay/turnclient"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
)

func startRelay(t *testing.T) *relay.Server {
	t.Helper()
	s, err := relay.New(context.Background(), relay.Config{
		Name: "r1", Listen: "127.0.0.1:0", TLSListen: "127.0.0.1:0",
		DataDir: filepath.Join(t.TempDir(), "relay"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestMapsCarryRelayCredentials: a node's map lists the relay with a
// credential for that node which the relay accepts, over every transport.
func TestMapsCarryRelayCredentials(t *testing.T) {
	r := startRelay(t)
	cred, err := turncred.LoadCred(r.CredPath())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { c.Relays = []turncred.Cred{cred} })
	a := newTestNode(t, h.c)
	resp := a.enroll(h.token(wire.CreateTokenRequest{}), "alpha")
	m := verify(t, resp.Map, h.c.PublicKey())
	if len(m.Relays) != 1 {
		t.Fatalf("map relays = %+v, want one", m.Relays)
	}
	got := m.Relays[0]
	now := time.Now()
	if got.Name != "r1" || !strings.HasSuffix(got.Username, ":alpha") || got.TLSPin != r.Cred().TLSPin ||
		got.Expires.Before(now.Add(relayCredTTL-relayCredStep)) || got.Expires.After(now.Add(relayCredTTL)) || len(got.Addrs) != 3 {
		t.Fatalf("relay in map: %+v", got)
	}
	if strings.Contains(string(resp.Map.Payload), base64.StdEncoding.EncodeToString(cred.Secret)) {
		t.Fatal("the relay secret leaked into a map")
	}
	for _, addr := range got.Addrs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := turnclient.DialProbe(ctx, turnclient.Config{Relay: got, Transport: addr.Transport})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		_, err = c.Allocate(ctx)
		c.Close()
		cancel()
		if err != nil {
			t.Fatalf("relay refused the map's credential over %s: %v", addr.Transport, err)
		}
	}
	// Maps built within the same step carry the same credential.
	if m2 := a.update(netip.MustParseAddrPort("127.0.0.1:41641")); m2.Relays[0].Password != got.Password &&
		now.Truncate(relayCredStep) == time.Now().Truncate(relayCredStep) {
		t.Fatalf("credential changed within the step: %+v vs %+v", m2.Relays[0], got)
	}
}

func TestRelayConfigRefused(t *testing.T) {
	r := startRelay(t)
	bad := r.Cred()
	bad.Secret = []byte("short")
	for name, relays := range map[string][]turncred.Cred{
		"short secret": {bad},
		"duplicate":    {r.Cred(), r.Cred()},
	} {
		if c, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Relays: relays}); err == nil {
			c.Close()
			t.Errorf("%s: New accepted relays", name)
		}
	}
}

// TestRelayCredentialsRefreshed: a stream whose credentials run low gets
// a fresh map at a keepalive, even when nothing changed. The stream runs in
// a synctest bubble over in-memory connections, so the keepalive that
// carries the fresh map is the next one on fake time.
func TestRelayCredentialsRefreshed(t *testing.T) {
	r := startRelay(t)
	synctest.Test(t, func(t *testing.T) {
		clock := clocktest.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
		h := newPipeHarness(t, func(c *Config) {
			c.Relays = []turncred.Cred{r.Cred()}
			c.Now = clock.Now
		})
		a := newTestNode(t, h.c)
		a.enroll(h.token(wire.CreateTokenRequest{}), "alpha")
		s := a.openStream(h.c.PublicKey())
		first := s.waitMap(time.Second, "first map", func(m *wire.Map) bool { return len(m.Relays) == 1 })
		clock.Add(relayCredTTL - relayCredRefresh + relayCredStep)
		time.Sleep(wire.StreamKeepalive) // fake time: the next keepalive
		synctest.Wait()
		next := s.waitMap(time.Nanosecond, "fresh credentials", func(m *wire.Map) bool {
			return len(m.Relays) == 1 && m.Relays[0].Expires.After(first.Relays[0].Expires)
		})
		if want := clock.Now().Truncate(relayCredStep).Add(relayCredTTL); !next.Relays[0].Expires.Equal(want) {
			t.Fatalf("refreshed expiry %v, want %v", next.Relays[0].Expires, want)
		}
	})
}

func (n *testNode) postUpdate(req wire.UpdateRequest) (int, wire.ErrorResponse) {
	n.t.Helper()
	status, _, er := n.do(http.MethodPost, wire.PathUpdate, mustJSON(n.t, req), nil)
	return status, er
}

func TestDiscoKeyAndRelayedStored(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	s := a.openStream(h.c.PublicKey())
	disco := base64.StdEncoding.EncodeToString(make([]byte, 32))
	relayed := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.2:50000")}
	ep := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:51820")}
	if st, er := b.postUpdate(wire.UpdateRequest{WGKey: b.wg, DiscoKey: disco, Endpoints: ep, Relayed: relayed}); st != http.StatusOK {
		t.Fatalf("update: %d %+v", st, er)
	}
	s.waitMap(time.Second, "bravo's disco key and relayed address", func(m *wire.Map) bool {
		p, ok := m.Peer("bravo")
		return ok && p.DiscoKey == disco && len(p.Relayed) == 1 && p.Relayed[0] == relayed[0]
	})
	// An update without a disco key keeps the stored one.
	if st, _ := b.postUpdate(wire.UpdateRequest{WGKey: b.wg, Endpoints: ep}); st != http.StatusOK {
		t.Fatal(st)
	}
	s.waitMap(time.Second, "bravo without relayed", func(m *wire.Map) bool {
		p, ok := m.Peer("bravo")
		return ok && p.DiscoKey == disco && len(p.Relayed) == 0
	})

	many := make([]netip.AddrPort, maxRelayed+1)
	for i := range many {
		many[i] = netip.AddrPortFrom(netip.MustParseAddr("203.0.113.2"), uint16(1000+i))
	}
	for name, req := range map[string]wire.UpdateRequest{
		"short disco":     {WGKey: b.wg, DiscoKey: base64.StdEncoding.EncodeToString(make([]byte, 16))},
		"not base64":      {WGKey: b.wg, DiscoKey: "!!!"},
		"too many":        {WGKey: b.wg, Relayed: many},
		"zero port":       {WGKey: b.wg, Relayed: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.2:0")}},
		"unspecified":     {WGKey: b.wg, Relayed: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:3478")}},
		"invalid relayed": {WGKey: b.wg, Relayed: []netip.AddrPort{{}}},
	} {
		if st, er := b.postUpdate(req); st != http.StatusBadRequest || er.Code != wire.CodeBadRequest {
			t.Errorf("%s: %d %+v, want 400 bad_request", name, st, er)
		}
	}
	// Enrollment carries the disco key too.
	c := newTestNode(t, h.c)
	req := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, Token: tok, Name: "charlie", WGKey: c.wg, DiscoKey: disco}
	st, body, er := c.do(http.MethodPost, wire.PathEnroll, mustJSON(t, req), nil)
	var resp wire.EnrollResponse
	if st != http.StatusOK || json.Unmarshal(body, &resp) != nil || resp.Node.DiscoKey != disco {
		t.Fatalf("enroll with disco key: %d %+v %+v", st, er, resp.Node)
	}
}

// TestRevokedNodeRelayCredentialRefused: the relay learns revocations by
// expiry. A revoked node's last credential is refused by the relay at most
// relayCredTTL after the revocation (issue 17 item 9: it was ~25 h).
func TestRevokedNodeRelayCredentialRefused(t *testing.T) {
	clock := clocktest.New(time.Now())
	r, err := relay.New(context.Background(), relay.Config{
		Name: "r1", Listen: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "relay"), Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	h := newHarness(t, func(c *Config) { c.Relays = []turncred.Cred{r.Cred()}; c.Now = clock.Now })
	a := newTestNode(t, h.c)
	m := verify(t, a.enroll(h.token(wire.CreateTokenRequest{}), "alpha").Map, h.c.PublicKey())
	cred := m.Relays[0]
	alloc := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := turnclient.DialProbe(ctx, turnclient.Config{Relay: cred, Transport: wire.TransportUDP, Now: clock.Now})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Allocate(ctx)
		return err
	}
	if err := alloc(); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if _, err := h.c.revokeNode("alpha", "test"); err != nil {
		t.Fatal(err)
	}
	clock.Add(relayCredTTL)
	cred.Expires = time.Time{} // the attacker ignores the expiry the map states
	if err := alloc(); err == nil {
		t.Fatalf("relay accepted a revoked node's credential %v after the revocation", relayCredTTL)
	}
	if n := r.Stats().Refused[relay.ReasonExpired]; n == 0 {
		t.Fatalf("Refused[%s] = 0", relay.ReasonExpired)
	}
}
