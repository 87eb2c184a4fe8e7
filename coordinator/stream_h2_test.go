package coordinator

import (
	"net/http"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// TestStreamIdleOverHTTP2: nodes speak HTTP/2 to the coordinator, where a
// write deadline left pending resets an idle stream when it passes. An idle
// stream must outlive the write timeout and still deliver the next change.
func TestStreamIdleOverHTTP2(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.writeTimeout = 200 * time.Millisecond; c.keepalive = time.Minute })
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a := newTestNode(t, h.c)
	tr := &http.Transport{TLSClientConfig: wire.PinnedTLSConfig(h.c.Pin()), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	a.hc = &http.Client{Transport: tr}
	a.enroll(tok, "alpha")
	s := a.openStream(h.c.PublicKey())
	if s.resp.ProtoMajor != 2 {
		t.Fatalf("stream over HTTP/%d, want HTTP/2", s.resp.ProtoMajor)
	}
	s.waitMap(time.Second, "first map", func(m *wire.Map) bool { return true })

	time.Sleep(800 * time.Millisecond) // 4× the write timeout, no writes
	newTestNode(t, h.c).enroll(tok, "bravo")
	s.waitMap(2*time.Second, "bravo joined after idling", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return ok })
}
