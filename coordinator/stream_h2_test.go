package coordinator

import (
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// TestStreamIdleOverHTTP2: nodes speak HTTP/2 to the coordinator, where a
// write deadline left pending resets an idle stream when it passes. An idle
// stream must outlive the write timeout and still deliver the next change.
// It runs in a synctest bubble over in-memory connections, so the idle
// time is fake and the default write timeout applies.
func TestStreamIdleOverHTTP2(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, func(c *Config) { c.keepalive = time.Hour })
		tok := h.token(wire.CreateTokenRequest{Reusable: true})
		a := newTestNode(t, h.c)
		tr := &http.Transport{TLSClientConfig: wire.PinnedTLSConfig(h.c.Pin()), ForceAttemptHTTP2: true,
			DialContext: h.cfg.listener.(*pipeListener).dialContext}
		t.Cleanup(tr.CloseIdleConnections)
		a.hc = &http.Client{Transport: tr}
		a.enroll(tok, "alpha")
		s := a.openStream(h.c.PublicKey())
		if s.resp.ProtoMajor != 2 {
			t.Fatalf("stream over HTTP/%d, want HTTP/2", s.resp.ProtoMajor)
		}
		s.waitMap(time.Second, "first map", func(m *wire.Map) bool { return true })

		time.Sleep(4 * streamWriteTimeout) // fake time: no writes
		newTestNode(t, h.c).enroll(tok, "bravo")
		synctest.Wait()
		s.waitMap(time.Nanosecond, "bravo joined after idling", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return ok })
	})
}
