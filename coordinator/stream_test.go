package coordinator

import (
	"net/http"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentnet/agentnet/wire"
)

func TestStreamFirstMessageIsMap(t *testing.T) {
	h := newHarness(t, nil)
	a := newTestNode(t, h.c)
	a.enroll(h.token(wire.CreateTokenRequest{}), "alpha")
	s := a.openStream(h.c.PublicKey())
	select {
	case msg := <-s.msgs:
		if msg.Type != "map" {
			t.Fatalf("first message type %q, want map", msg.Type)
		}
		m := verify(t, msg.Map, h.c.PublicKey())
		if m.Self.Name != "alpha" || !m.Self.Online {
			t.Errorf("first map self = %s online=%v, want alpha online", m.Self.Name, m.Self.Online)
		}
	case <-time.After(time.Second):
		t.Fatal("no first map within 1s")
	}
}

func TestStreamPushesJoin(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a := newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	s := a.openStream(h.c.PublicKey())
	first := s.waitMap(time.Second, "alpha alone", func(m *wire.Map) bool { return len(m.Peers) == 0 })

	newTestNode(t, h.c).enroll(tok, "bravo")
	m := s.waitMap(time.Second, "bravo joined", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return ok })
	if m.Serial <= first.Serial {
		t.Errorf("serial %d after join, want > %d", m.Serial, first.Serial)
	}
}

func TestStreamPushesUpdate(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	s := a.openStream(h.c.PublicKey())

	ep := netip.MustParseAddrPort("198.51.100.7:51820")
	if m := b.update(ep); len(m.Self.Endpoints) != 1 || m.Self.Endpoints[0] != ep {
		t.Errorf("update response self endpoints = %v, want [%v]", m.Self.Endpoints, ep)
	}
	s.waitMap(time.Second, "bravo's new endpoint", func(m *wire.Map) bool {
		p, ok := m.Peer("bravo")
		return ok && len(p.Endpoints) == 1 && p.Endpoints[0] == ep
	})
	if h.c.Stats().Updates != 1 {
		t.Errorf("Stats().Updates = %d, want 1", h.c.Stats().Updates)
	}
}

func TestStreamOnlineOffline(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	sa := a.openStream(h.c.PublicKey())
	sa.waitMap(time.Second, "bravo offline", func(m *wire.Map) bool { p, ok := m.Peer("bravo"); return ok && !p.Online })

	sb := b.openStream(h.c.PublicKey())
	on := sa.waitMap(time.Second, "bravo online", func(m *wire.Map) bool { p, _ := m.Peer("bravo"); return p.Online })
	sb.waitMap(time.Second, "alpha online", func(m *wire.Map) bool { p, _ := m.Peer("alpha"); return p.Online && m.Self.Online })
	if h.c.Stats().StreamsOpen != 2 {
		t.Errorf("StreamsOpen = %d, want 2", h.c.Stats().StreamsOpen)
	}

	sb.close()
	off := sa.waitMap(time.Second, "bravo offline again", func(m *wire.Map) bool { p, _ := m.Peer("bravo"); return !p.Online })
	p, _ := off.Peer("bravo")
	if p.LastSeen.IsZero() || off.Serial <= on.Serial {
		t.Errorf("offline map: LastSeen %v serial %d (online serial %d)", p.LastSeen, off.Serial, on.Serial)
	}
	nodes, err := h.admin.Nodes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if want := n.Name == "alpha"; n.Online != want {
			t.Errorf("Nodes(): %s online=%v, want %v", n.Name, n.Online, want)
		}
	}
}

// TestStreamKeepalive runs in a synctest bubble over in-memory
// connections: the first keepalive comes exactly one default interval
// (wire.StreamKeepalive) after the stream opened, and carries no map.
func TestStreamKeepalive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, nil)
		a := newTestNode(t, h.c)
		a.enroll(h.token(wire.CreateTokenRequest{}), "alpha")
		s := a.openStream(h.c.PublicKey())
		keepalives := func() (n int) {
			for len(s.msgs) > 0 {
				if msg := <-s.msgs; msg.Type == "keepalive" {
					if msg.Map != nil {
						t.Error("keepalive carries a map")
					}
					n++
				}
			}
			return n
		}
		time.Sleep(wire.StreamKeepalive - time.Nanosecond) // fake time
		synctest.Wait()
		if n := keepalives(); n != 0 {
			t.Fatalf("%d keepalives before the interval passed", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := keepalives(); n != 1 {
			t.Fatalf("%d keepalives once the interval passed, want 1", n)
		}
	})
}

// TestStreamReplacedByNewer runs in a synctest bubble over in-memory
// connections, so synctest.Wait tells when every map the reconnect causes
// has arrived.
func TestStreamReplacedByNewer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, nil)
		tok := h.token(wire.CreateTokenRequest{Reusable: true})
		a, b := newTestNode(t, h.c), newTestNode(t, h.c)
		a.enroll(tok, "alpha")
		b.enroll(tok, "bravo")
		sa := a.openStream(h.c.PublicKey())
		old := b.openStream(h.c.PublicKey())
		sa.waitMap(time.Second, "bravo online", func(m *wire.Map) bool { p, _ := m.Peer("bravo"); return p.Online })

		b.openStream(h.c.PublicKey()).waitMap(time.Second, "bravo's map", func(m *wire.Map) bool { return m.Self.Name == "bravo" })
		old.waitEnd(time.Second)
		// Replacing a stream never takes the node offline: no map after the
		// reconnect shows bravo offline.
		synctest.Wait()
		for len(sa.msgs) > 0 {
			msg := <-sa.msgs
			if msg.Type != "map" {
				continue
			}
			if p, _ := verify(t, msg.Map, h.c.PublicKey()).Peer("bravo"); !p.Online {
				t.Error("bravo shown offline while reconnecting")
			}
		}
		if got := h.c.Stats().StreamsOpen; got != 2 {
			t.Errorf("StreamsOpen = %d, want 2", got)
		}
	})
}

func TestStreamRefusesUnenrolled(t *testing.T) {
	h := newHarness(t, nil)
	status, _, er := newTestNode(t, h.c).do(http.MethodGet, wire.PathStream, nil, nil)
	if status != http.StatusUnauthorized || er.Code != wire.CodeUnauthorized {
		t.Fatalf("stream from unenrolled node: %d %s, want 401 unauthorized", status, er.Code)
	}
}

// TestFanoutCoalesces checks that notifying a stream that is not reading
// never blocks and never queues more than one pending wake-up.
func TestFanoutCoalesces(t *testing.T) {
	h := newHarness(t, nil)
	s := &stream{did: "did:key:zslow", wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.c.attach(s)
	before := h.c.Stats().Coalesced
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			h.c.notifyAll()
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("notifyAll blocked on a stream that is not reading")
	}
	if len(s.wake) != 1 || h.c.Stats().Coalesced-before != 999 {
		t.Errorf("pending wakes %d, coalesced %d; want 1 and 999", len(s.wake), h.c.Stats().Coalesced-before)
	}
	h.c.detach(s)
}
