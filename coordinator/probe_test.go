package coordinator

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

func (s *testStream) waitProbe(d time.Duration) wire.Probe {
	s.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case msg, open := <-s.msgs:
			if !open {
				s.t.Fatal("stream ended while waiting for a probe")
			}
			if msg.Type == wire.MsgProbe && msg.Probe != nil {
				return *msg.Probe
			}
		case <-timeout:
			s.t.Fatalf("no probe within %v", d)
		}
	}
}

func TestProbeReachesBothStreams(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	aEP, bEP := netip.MustParseAddrPort("198.51.100.1:41641"), netip.MustParseAddrPort("198.51.100.2:41641")
	bRelayed := netip.MustParseAddrPort("203.0.113.2:50000")
	a.update(aEP)
	if st, er := b.postUpdate(wire.UpdateRequest{WGKey: b.wg, Endpoints: []netip.AddrPort{bEP}, Relayed: []netip.AddrPort{bRelayed}}); st != http.StatusOK {
		t.Fatalf("update: %d %+v", st, er)
	}
	sa, sb := a.openStream(h.c.PublicKey()), b.openStream(h.c.PublicKey())
	sa.waitMap(time.Second, "first", func(*wire.Map) bool { return true })
	sb.waitMap(time.Second, "first", func(*wire.Map) bool { return true })

	st, _, er := a.do(http.MethodPost, wire.PathProbe, mustJSON(t, wire.ProbeRequest{Peer: "bravo"}), nil)
	if st != http.StatusNoContent {
		t.Fatalf("probe: %d %+v", st, er)
	}
	pa, pb := sa.waitProbe(time.Second), sb.waitProbe(time.Second)
	if pa.Peer != "bravo" || pa.WGKey != b.wg || len(pa.Endpoints) != 1 || pa.Endpoints[0] != bEP ||
		len(pa.Relayed) != 1 || pa.Relayed[0] != bRelayed {
		t.Errorf("alpha's probe: %+v", pa)
	}
	if pb.Peer != "alpha" || pb.WGKey != a.wg || len(pb.Endpoints) != 1 || pb.Endpoints[0] != aEP {
		t.Errorf("bravo's probe: %+v", pb)
	}
	if pa.Generation == 0 || pa.Generation != pb.Generation || pa.DelayMS != pb.DelayMS || pa.DelayMS <= 0 {
		t.Errorf("probes differ in generation or delay: %+v / %+v", pa, pb)
	}
	// The next request has a newer generation.
	a.do(http.MethodPost, wire.PathProbe, mustJSON(t, wire.ProbeRequest{Peer: "bravo"}), nil)
	if p := sb.waitProbe(time.Second); p.Generation <= pb.Generation {
		t.Errorf("second probe generation %d, want > %d", p.Generation, pb.Generation)
	}
	sa.waitProbe(time.Second)
	h.waitStats("2 probes accepted and 4 sent", func(st Stats) bool { return st.ProbesAccepted == 2 && st.ProbesSent == 4 })
}

func TestProbeRefusals(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	for name, tc := range map[string]struct {
		body   string
		status int
		code   string
	}{
		"unknown peer":  {`{"peer":"zulu"}`, http.StatusNotFound, wire.CodeNotFound},
		"self":          {`{"peer":"alpha"}`, http.StatusBadRequest, wire.CodeBadRequest},
		"unknown field": {`{"peer":"bravo","x":1}`, http.StatusBadRequest, wire.CodeBadRequest},
		"not json":      {`peer=bravo`, http.StatusBadRequest, wire.CodeBadRequest},
	} {
		st, _, er := a.do(http.MethodPost, wire.PathProbe, []byte(tc.body), nil)
		if st != tc.status || er.Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", name, st, er.Code, tc.status, tc.code)
		}
	}
	// Unsigned (tampered signature) requests are refused.
	st, _, er := a.do(http.MethodPost, wire.PathProbe, []byte(`{"peer":"bravo"}`), func(r *http.Request) {
		r.Header.Set(wire.HeaderSignature, "AAAA")
	})
	if st != http.StatusUnauthorized || er.Code != wire.CodeUnauthorized {
		t.Errorf("bad signature: %d %+v", st, er)
	}
	// A flood is rate limited and counted; bravo has no stream, so its
	// probes are dropped and counted.
	limited := 0
	for range 3 * probeBurst {
		if st, _, _ := a.do(http.MethodPost, wire.PathProbe, []byte(`{"peer":"bravo"}`), nil); st == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 || h.c.Stats().Refused[wire.CodeRateLimited] != uint64(limited) {
		t.Fatalf("rate limit: %d limited, stats %+v", limited, h.c.Stats().Refused)
	}
	if h.c.Stats().ProbesDropped == 0 {
		t.Errorf("probes to streamless nodes not counted as dropped: %+v", h.c.Stats())
	}
}
