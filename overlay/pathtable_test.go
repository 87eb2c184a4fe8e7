package overlay

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/wire"
)

// The path table's tests drive it with explicit times: tick(now) and the
// disco handlers return what to send, and the tests answer as the peer
// would. No socket.

var (
	ptDirect  = netip.MustParseAddrPort("192.0.2.10:41641") // the peer's published endpoint
	ptDirect2 = netip.MustParseAddrPort("192.0.2.11:41641") // a second one
	ptRelayed = netip.MustParseAddrPort("203.0.113.5:50000")
)

// ptFixture is a path table (our side) and one peer's disco keys.
type ptFixture struct {
	clk    *clocktest.Clock
	t      *pathTable
	peerDK *discoKeys
	peer   peerInfo
	shared [32]byte // the peer's box key towards us, to open our pings
}

func newPTFixture(tb testing.TB, self, peer [32]byte, endpoints, relayed []netip.AddrPort) *ptFixture {
	tb.Helper()
	us, peerDK := newDiscoKeys(tb), newDiscoKeys(tb)
	f := &ptFixture{clk: clocktest.New(guardT0), peerDK: peerDK}
	f.t = newPathTable(self, newHandshakeGuard(self), f.clk.Now, slog.New(slog.DiscardHandler))
	f.t.disco = us
	f.t.setRelays([]wire.Relay{{Name: "r1", Addrs: []wire.RelayAddr{{Transport: wire.TransportUDP, Addr: netip.AddrPortFrom(ptRelayed.Addr(), 3478)}}}})
	box.Precompute(&f.shared, &us.pub, &peerDK.priv)
	f.peer = peerInfo{key: peer, name: "peer", disco: peerDK.pub, hasDisco: true, endpoints: endpoints, relayed: relayed}
	f.t.setPeerInfo([]peerInfo{f.peer})
	return f
}

func newDiscoKeys(tb testing.TB) *discoKeys {
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &discoKeys{pub: *pub, priv: *priv}
}

// tick moves the clock to t0+at and ticks.
func (f *ptFixture) tick(at time.Duration) tickOut {
	f.clk.Set(guardT0.Add(at))
	return f.t.tick(f.clk.Now())
}

// pings opens our pings in outs as the peer, by destination: "ttl2 ip:port"
// for a pre-punch, "ip:port" otherwise; sorted.
func (f *ptFixture) pings(tb testing.TB, outs []discoOut) ([]string, map[netip.AddrPort]txID) {
	tb.Helper()
	var got []string
	ids := map[netip.AddrPort]txID{}
	for _, o := range outs {
		m, err := openDisco(o.pkt, &f.shared)
		if err != nil || m.kind != discoPing {
			tb.Fatalf("out to %v is not a ping of ours: %v", o.to, err)
		}
		s := o.to.String()
		if o.ttl > 0 {
			s = fmt.Sprintf("ttl%d %s", o.ttl, s)
		} else {
			ids[o.to] = m.txid
		}
		got = append(got, s)
	}
	slices.Sort(got)
	return got, ids
}

// pong answers ping id from the peer at src.
func (f *ptFixture) pong(id txID, src netip.AddrPort) []discoOut {
	shared := f.t.discoKey(f.peerDK.pub)
	return f.t.acceptDisco(f.peerDK.pub, shared, discoMsg{kind: discoPong, txid: id, addr: src}, src, false, f.clk.Now(), nil)
}

func (f *ptFixture) path() *path { return f.t.peers().byKey[f.peer.key].path.Load() }

func describePath(pa *path) string {
	if pa == nil {
		return "none"
	}
	s := pa.describe()
	if pa.kind == kindDirect && !pa.verified {
		s += " unverified"
	}
	return s
}

// TestPathTableSchedule: the rounds a new peer gets, by time: pre-punch and
// full ping to each direct candidate, the relayed address at once, rounds
// at 0, 1 and 3 s (each direct ping going out prePunchLead after its
// pre-punch), pings on the path in use every 2 s, and then slow rounds
// 40 s apart only on the side with the larger key, each asking the peer
// (coordinator and call-me-maybe) to probe at the same time.
func TestPathTableSchedule(t *testing.T) {
	type step struct {
		at    time.Duration
		pings []string
		asks  int
	}
	d, r := ptDirect.String(), ptRelayed.String()
	first := []step{
		{0, []string{r, r, "ttl2 " + d}, 1}, // round 1 (+ the path in use); setPeerInfo asks
		// Round 2 pre-punches again and moves round 1's full ping
		// (prePunchLead equals the first quick round's delay).
		{time.Second, []string{r, "ttl2 " + d}, 0},
		{2 * time.Second, []string{d, r}, 0}, // pre-punch lead over; path ping
		{3 * time.Second, []string{r, "ttl2 " + d}, 0},
		{4 * time.Second, []string{d, r}, 0},
		{5 * time.Second, nil, 0},
	}
	for _, tc := range []struct {
		name  string
		self  [32]byte
		steps []step
	}{
		{"larger key keeps probing", pbHigh, append(slices.Clone(first),
			step{6 * time.Second, []string{r}, 0},
			step{43 * time.Second, []string{r, r, "ttl2 " + d}, 1}, // slow round, asks
			step{44 * time.Second, []string{d}, 0},
			step{83 * time.Second, []string{r, r, "ttl2 " + d}, 1},
		)},
		{"smaller key waits to be asked", pbLow, append(slices.Clone(first),
			step{6 * time.Second, []string{r}, 0},
			step{43 * time.Second, []string{r}, 0},
			step{83 * time.Second, []string{r}, 0},
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := pbLow
			if tc.self == pbLow {
				peer = pbHigh
			}
			f := newPTFixture(t, tc.self, peer, []netip.AddrPort{ptDirect}, []netip.AddrPort{ptRelayed})
			if got := describePath(f.path()); got != "relay r1 via udp ("+r+")" {
				t.Fatalf("path before any pong: %s, want the relay at once", got)
			}
			for _, s := range tc.steps {
				out := f.tick(s.at)
				got, _ := f.pings(t, out.outs)
				if !slices.Equal(got, s.pings) || len(out.asks) != s.asks || len(out.callMe) != s.asks {
					t.Fatalf("at %v: pings %q asks %d callMe %d, want %q asks %d", s.at, got, len(out.asks), len(out.callMe), s.pings, s.asks)
				}
			}
			if f.t.probesSent.Load() == 0 || f.t.pongsRecv.Load() != 0 {
				t.Fatalf("counters: sent %d pongs %d", f.t.probesSent.Load(), f.t.pongsRecv.Load())
			}
		})
	}
}

// TestPathTableChoice: which path a peer's packets take, given which
// candidates answered when.
func TestPathTableChoice(t *testing.T) {
	type pong struct {
		at  time.Duration
		src netip.AddrPort
		rtt time.Duration
	}
	d, d2, r := ptDirect, ptDirect2, ptRelayed
	for _, tc := range []struct {
		name       string
		noRelays   bool // the map has no relay
		endpoints  []netip.AddrPort
		relayed    []netip.AddrPort
		forceRelay bool
		pongs      []pong
		at         time.Duration // tick then
		want       string
		reason     string // substring of the status reason; "" for none
	}{
		{"no relay: first endpoint unverified", true, []netip.AddrPort{d}, nil, false, nil, 0, "direct " + d.String() + " unverified", ""},
		{"relay in the map, none for the peer: wait", false, []netip.AddrPort{d}, nil, false, nil, 0, "none", "probing direct candidates"},
		{"relay until a pong", false, []netip.AddrPort{d}, []netip.AddrPort{r}, false, nil, 0, "relay r1 via udp (" + r.String() + ")", "probing direct candidates"},
		{"pong: verified direct", false, []netip.AddrPort{d}, []netip.AddrPort{r}, false, []pong{{2250 * time.Millisecond, d, 0}}, 3 * time.Second, "direct " + d.String(), ""},
		{"lower RTT wins", false, []netip.AddrPort{d, d2}, []netip.AddrPort{r}, false,
			[]pong{{2250 * time.Millisecond, d, 30 * time.Millisecond}, {2250 * time.Millisecond, d2, 10 * time.Millisecond}}, 3 * time.Second, "direct " + d2.String(), ""},
		{"silent for pathTimeout: back to the relay", false, []netip.AddrPort{d}, []netip.AddrPort{r}, false, []pong{{2250 * time.Millisecond, d, 0}},
			2250*time.Millisecond + pathTimeout, "relay r1 via udp (" + r.String() + ")", "probing direct candidates"}, // probing again
		{"force relay never goes direct", false, []netip.AddrPort{d}, []netip.AddrPort{r}, true, nil, 3 * time.Second, "relay r1 via udp (" + r.String() + ")", "--force-relay"},
		{"no candidates", false, nil, nil, false, nil, 0, "none", "no candidates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPTFixture(t, pbHigh, pbLow, tc.endpoints, tc.relayed)
			f.t.forceRelay = tc.forceRelay
			if tc.noRelays {
				f.t.setRelays(nil)
				f.t.setPeerInfo([]peerInfo{f.peer})
			}
			ids := map[netip.AddrPort]txID{}
			sentAt := map[netip.AddrPort]time.Time{}
			var lost bool
			for at := time.Duration(0); at <= tc.at; at += 250 * time.Millisecond {
				for _, p := range tc.pongs {
					if p.at != at {
						continue
					}
					id, ok := ids[p.src]
					if !ok {
						t.Fatalf("no ping to %v to answer by %v", p.src, at)
					}
					// The pong arrives rtt after the ping went out.
					f.clk.Set(sentAt[p.src].Add(p.rtt))
					if out := f.pong(id, p.src); len(out) != 0 {
						t.Fatalf("a pong was answered: %d packets", len(out))
					}
				}
				out := f.tick(at)
				lost = lost || out.pathLost
				_, got := f.pings(t, out.outs)
				for ap, id := range got {
					ids[ap], sentAt[ap] = id, f.clk.Now()
				}
			}
			if got := describePath(f.path()); got != tc.want {
				t.Fatalf("path %s, want %s", got, tc.want)
			}
			ps := f.t.pathStatus(pbLow)
			if ps != nil && (tc.reason == "") != (ps.Reason == "") || ps != nil && !strings.Contains(ps.Reason, tc.reason) {
				t.Fatalf("reason %q, want %q", ps.Reason, tc.reason)
			}
			if wantLost := tc.name == "silent for pathTimeout: back to the relay"; lost != wantLost {
				t.Fatalf("pathLost %v, want %v", lost, wantLost)
			}
		})
	}
}

// TestPathTableHysteresis: a verified direct path gives way to another only
// if that one is more than 20% faster.
func TestPathTableHysteresis(t *testing.T) {
	for _, tc := range []struct {
		name   string
		newRTT time.Duration // the current path answers in 10 ms
		want   netip.AddrPort
	}{
		{"not better by enough", 9 * time.Millisecond, ptDirect},
		{"better by more than 20%", 7 * time.Millisecond, ptDirect2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPTFixture(t, pbHigh, pbLow, []netip.AddrPort{ptDirect}, []netip.AddrPort{ptRelayed})
			f.tick(0)
			f.tick(time.Second)
			_, ids := f.pings(t, f.tick(2*time.Second).outs)
			f.clk.Add(10 * time.Millisecond)
			f.pong(ids[ptDirect], ptDirect)
			if pa := f.path(); pa == nil || pa.addr != ptDirect || !pa.verified {
				t.Fatalf("path %s", describePath(pa))
			}
			// A new candidate arrives (the map lists it) and answers.
			f.peer.endpoints = []netip.AddrPort{ptDirect, ptDirect2}
			f.t.setPeerInfo([]peerInfo{f.peer})
			// Its full ping follows its pre-punch (a round's, then the
			// next round's).
			var id txID
			for at, ok := 2250*time.Millisecond, false; !ok; at += 250 * time.Millisecond {
				if at > 6*time.Second {
					t.Fatal("no full ping to the new candidate")
				}
				_, ids = f.pings(t, f.tick(at).outs)
				id, ok = ids[ptDirect2]
			}
			f.clk.Add(tc.newRTT)
			f.pong(id, ptDirect2)
			if pa := f.path(); pa == nil || pa.addr != tc.want {
				t.Fatalf("path %s, want direct %s", describePath(pa), tc.want)
			}
		})
	}
}

// TestPathTableDisco: what the table does with opened disco messages: a ping
// from a new source makes it a candidate (verified by our own ping, never
// moving the path) and is answered; a pong for no ping of ours, or a ping
// naming another WireGuard key, is dropped and counted.
func TestPathTableDisco(t *testing.T) {
	f := newPTFixture(t, pbHigh, pbLow, []netip.AddrPort{ptDirect}, []netip.AddrPort{ptRelayed})
	f.tick(0) // the first round
	shared := f.t.discoKey(f.peerDK.pub)
	src := netip.MustParseAddrPort("198.51.100.7:6000")
	out := f.t.acceptDisco(f.peerDK.pub, shared, discoMsg{kind: discoPing, txid: newTxID(), wgKey: pbLow}, src, false, f.clk.Now(), nil)
	if len(out) != 1 || out[0].to != src {
		t.Fatalf("ping not answered with a pong to its source: %+v", out)
	}
	m, err := openDisco(out[0].pkt, &f.shared)
	if err != nil || m.kind != discoPong || m.addr != src {
		t.Fatalf("answer %+v, %v: want a pong naming the source", m, err)
	}
	if e := f.t.peers().peerAt(src); e == nil || e.key != pbLow {
		t.Fatal("a verified peer's new source is not in the published peer index")
	}
	if describePath(f.path()) != "relay r1 via udp ("+ptRelayed.String()+")" {
		t.Fatalf("a ping moved the path: %s", describePath(f.path()))
	}
	got, _ := f.pings(t, f.tick(250*time.Millisecond).outs)
	if !slices.Contains(got, src.String()) {
		t.Fatalf("the new source is not verified with a ping of ours: %q", got)
	}
	before := f.t.discoBad.Load()
	f.t.acceptDisco(f.peerDK.pub, shared, discoMsg{kind: discoPong, txid: newTxID(), addr: src}, src, false, f.clk.Now(), nil)
	f.t.acceptDisco(f.peerDK.pub, shared, discoMsg{kind: discoPing, txid: newTxID(), wgKey: pbHigh}, src, false, f.clk.Now(), nil)
	stale := [32]byte{1}
	f.t.acceptDisco(f.peerDK.pub, &stale, discoMsg{kind: discoPing, txid: newTxID(), wgKey: pbLow}, src, false, f.clk.Now(), nil)
	if got := f.t.discoBad.Load() - before; got != 3 {
		t.Fatalf("dropped %d, want 3 (unsolicited pong, wrong key, stale box key)", got)
	}
}

// TestPathTableIndex: the published peer index follows the table, and a
// snapshot once published never changes.
func TestPathTableIndex(t *testing.T) {
	f := newPTFixture(t, pbHigh, pbLow, []netip.AddrPort{ptDirect}, []netip.AddrPort{ptRelayed})
	ix := f.t.peers()
	if ix.peerAt(ptDirect) == nil || ix.peerAt(ptRelayed) == nil || ix.byKey[pbLow] == nil {
		t.Fatal("map candidates missing from the index")
	}
	f.t.setPeerInfo(nil)
	if f.t.peers().peerAt(ptDirect) != nil || f.t.peers().byKey[pbLow] != nil {
		t.Fatal("a forgotten peer is still in the index")
	}
	if ix.peerAt(ptDirect) == nil {
		t.Fatal("a published snapshot changed")
	}
}

// TestPathTableRoundWithPingsFull: a round when maxPendingPings pings to the
// peer are still unanswered sends nothing more and must not touch another
// packet's TTL (it once indexed outs[-1] and panicked the probe loop when
// the unanswered pings filled up before a round).
func TestPathTableRoundWithPingsFull(t *testing.T) {
	f := newPTFixture(t, pbHigh, pbLow, []netip.AddrPort{ptDirect}, []netip.AddrPort{ptRelayed})
	e := f.t.byKey[f.peer.key]
	f.t.mu.Lock()
	for len(e.pings) < maxPendingPings {
		e.pings[newTxID()] = sentPing{to: ptRelayed, at: f.clk.Now()}
	}
	f.t.mu.Unlock()
	out := f.tick(0)
	if got, _ := f.pings(t, out.outs); len(got) != 0 {
		t.Fatalf("pings %q with %d unanswered, want none", got, maxPendingPings)
	}
	// Once they expire, rounds send again.
	out = f.tick(pingExpiry + 2*time.Second)
	if got, _ := f.pings(t, out.outs); len(got) == 0 {
		t.Fatal("no pings after the unanswered ones expired")
	}
}
