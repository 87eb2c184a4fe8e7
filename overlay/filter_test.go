package overlay

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/wire"
)

// Test addresses: this node is .1 / ::1 of the overlay.
var (
	fSelf4 = netip.MustParseAddr("100.96.0.1")
	fSelf6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	fPeer2 = netip.MustParseAddr("100.96.0.2")
	fPeer3 = netip.MustParseAddr("100.96.0.3")
	fPeer5 = netip.MustParseAddr("100.96.0.5")
	fV6P2  = netip.MustParseAddr("fd7a:115c:a1e0::2")
	// fStranger is outside 100.96.0.0/12: no rule lists it.
	fStranger = netip.MustParseAddr("100.112.0.9")
)

// testPkt describes a packet to build.
type testPkt struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16 // ICMP echo: sport is the id
	flags        uint8  // TCP flags
	icmpType     uint8
	payload      []byte
}

// build returns the packet as bytes with valid lengths and checksums.
func (t testPkt) build() []byte {
	var l4 []byte
	switch t.proto {
	case protoTCP:
		l4 = make([]byte, 20+len(t.payload))
		binary.BigEndian.PutUint16(l4[0:], t.sport)
		binary.BigEndian.PutUint16(l4[2:], t.dport)
		binary.BigEndian.PutUint32(l4[4:], 1000)
		binary.BigEndian.PutUint32(l4[8:], 2000)
		l4[12] = 5 << 4
		l4[13] = t.flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], t.payload)
	case protoUDP:
		l4 = make([]byte, 8+len(t.payload))
		binary.BigEndian.PutUint16(l4[0:], t.sport)
		binary.BigEndian.PutUint16(l4[2:], t.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], t.payload)
	case protoICMP, protoICMPv6:
		l4 = make([]byte, 8+len(t.payload))
		l4[0] = t.icmpType
		binary.BigEndian.PutUint16(l4[4:], t.sport)
		copy(l4[8:], t.payload)
	default:
		l4 = append([]byte(nil), t.payload...)
	}
	var pkt []byte
	if t.src.Is4() {
		pkt = make([]byte, 20+len(l4))
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[8] = 64
		pkt[9] = t.proto
		s, d := t.src.As4(), t.dst.As4()
		copy(pkt[12:], s[:])
		copy(pkt[16:], d[:])
		binary.BigEndian.PutUint16(pkt[10:], ^checksum(pkt[:20], 0))
		copy(pkt[20:], l4)
	} else {
		pkt = make([]byte, 40+len(l4))
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(l4)))
		pkt[6] = t.proto
		pkt[7] = 64
		s, d := t.src.As16(), t.dst.As16()
		copy(pkt[8:], s[:])
		copy(pkt[24:], d[:])
		copy(pkt[40:], l4)
	}
	var p pktInfo
	p.key.src, p.key.dst, p.v6 = t.dst.As16(), t.src.As16(), t.src.Is6() // swapped: pseudoSum swaps back
	h := len(pkt) - len(l4)
	switch t.proto {
	case protoTCP:
		binary.BigEndian.PutUint16(pkt[h+16:], ^checksum(pkt[h:], pseudoSum(&p, protoTCP, len(l4))))
	case protoUDP:
		binary.BigEndian.PutUint16(pkt[h+6:], ^checksum(pkt[h:], pseudoSum(&p, protoUDP, len(l4))))
	case protoICMP:
		binary.BigEndian.PutUint16(pkt[h+2:], ^checksum(pkt[h:], 0))
	case protoICMPv6:
		binary.BigEndian.PutUint16(pkt[h+2:], ^checksum(pkt[h:], pseudoSum(&p, protoICMPv6, len(l4))))
	}
	return pkt
}

func tcpPkt(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	return testPkt{src: src, dst: dst, proto: protoTCP, sport: sport, dport: dport, flags: flags}.build()
}

func udpPkt(src, dst netip.Addr, sport, dport uint16) []byte {
	return testPkt{src: src, dst: dst, proto: protoUDP, sport: sport, dport: dport, payload: []byte("hi")}.build()
}

func echoPkt(src, dst netip.Addr, id uint16, reply bool) []byte {
	proto, typ := uint8(protoICMP), uint8(icmp4Echo)
	if src.Is6() {
		proto, typ = protoICMPv6, icmp6Echo
	}
	if reply {
		typ = map[uint8]uint8{icmp4Echo: icmp4EchoReply, icmp6Echo: icmp6EchoReply}[typ]
	}
	return testPkt{src: src, dst: dst, proto: proto, sport: id, icmpType: typ}.build()
}

// icmpErrPkt is an ICMPv4 destination unreachable from src to dst quoting
// the packet quoted.
func icmpErrPkt(src, dst netip.Addr, quoted []byte) []byte {
	return testPkt{src: src, dst: dst, proto: protoICMP, icmpType: icmp4Unreach, payload: quoted[:min(len(quoted), 28)]}.build()
}

// testFilter is the policy of the table tests.
func testFilter() *wire.Filter {
	return &wire.Filter{
		PolicyVersion: 7,
		Inbound: []wire.FilterRule{
			{Rule: "web", Peers: []string{"100.96.0.2/32"}, Protos: []string{"tcp"}, Ports: []wire.PortRange{{First: 80, Last: 80}, {First: 443, Last: 443}}},
			{Rule: "ping", Peers: []string{"100.96.0.0/12", "fd7a:115c:a1e0::/48"}, Protos: []string{"icmp"}},
			{Rule: "dns6", Peers: []string{"fd7a:115c:a1e0::2"}, Protos: []string{"udp"}, Ports: []wire.PortRange{{First: 53, Last: 53}}},
		},
		Outbound: []wire.FilterRule{
			{Rule: "out-tcp", Peers: []string{"100.96.0.0/12"}, Protos: []string{"tcp"}},
			{Rule: "out-udp6", Peers: []string{"fd7a:115c:a1e0::2/128"}, Protos: []string{"udp"}, Ports: []wire.PortRange{{First: 5000, Last: 5010}}},
		},
	}
}

// sink drains a ChannelTUN (wireguard-go's test device) so the filter's
// rejects never block; they are returned by take.
type sink struct {
	ch   *tuntest.ChannelTUN
	mu   sync.Mutex
	pkts [][]byte
	more chan struct{} // a packet arrived since the last take; cap 1
	stop chan struct{}
	done chan struct{}
}

func newSink(tb testing.TB) *sink {
	s := &sink{ch: tuntest.NewChannelTUN(), more: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case p := <-s.ch.Inbound:
				s.mu.Lock()
				s.pkts = append(s.pkts, p)
				if len(s.pkts) > 1000 {
					s.pkts = s.pkts[:0]
				}
				s.mu.Unlock()
				select {
				case s.more <- struct{}{}:
				default:
				}
			case <-s.stop:
				return
			}
		}
	}()
	tb.Cleanup(func() {
		close(s.stop)
		<-s.done
		s.ch.TUN().Close()
	})
	return s
}

func (s *sink) take() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pkts
	s.pkts = nil
	return p
}

// takeN takes packets until it holds n or wait passes without a new one.
func (s *sink) takeN(n int, wait time.Duration) [][]byte {
	got := s.take()
	for len(got) < n {
		select {
		case <-s.more:
			got = append(got, s.take()...)
		case <-time.After(wait):
			return got
		}
	}
	return got
}

// logRecords collects slog records.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r)
	l.mu.Unlock()
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// denials returns the "denied" records as attribute maps.
func (l *logRecords) denials() []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if !strings.Contains(r.Message, "denied") {
			continue
		}
		m := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

type testFilterEnv struct {
	f     *filterDevice
	sink  *sink
	clock *clocktest.Clock
	logs  *logRecords
	mu    sync.Mutex
	deny  []FilterDenial
}

func newTestFilter(t *testing.T, nf *wire.Filter, cfg filterConfig) *testFilterEnv {
	e := &testFilterEnv{sink: newSink(t), clock: clocktest.New(time.Unix(1e9, 0)), logs: &logRecords{}}
	cfg.Logger = slog.New(e.logs)
	cfg.Now = e.clock.Now
	cfg.OnDeny = func(d FilterDenial) {
		e.mu.Lock()
		e.deny = append(e.deny, d)
		e.mu.Unlock()
	}
	e.f = newFilterDevice(e.sink.ch.TUN(), cfg)
	e.f.setFilter(nf, fSelf4, fSelf6)
	return e
}

func (e *testFilterEnv) check(dir direction, pkt []byte) bool {
	var p pktInfo
	return e.f.check(dir, pkt, e.f.ruleSet(), e.f.clock(), &p)
}

func (e *testFilterEnv) ruleCount(dir direction, name string) (allowed, denied uint64) {
	rc := e.f.ctrs.get(dir, name)
	return rc.allowed.Load(), rc.denied.Load()
}

// TestFilterDecision walks one stateful sequence of packets through the
// decision: rules by peer, protocol and port, v4 and v6, replies through the
// flow table, ICMP echo and errors, and invalid packets.
func TestFilterDecision(t *testing.T) {
	e := newTestFilter(t, testFilter(), filterConfig{})
	synAck := uint8(tcpSYN | tcpACK)
	steps := []struct {
		name string
		dir  direction
		pkt  []byte
		want bool
	}{
		{"web SYN from .2 to :80", dirIn, tcpPkt(fPeer2, fSelf4, 40000, 80, tcpSYN), true},
		{"its SYN-ACK (reply)", dirOut, tcpPkt(fSelf4, fPeer2, 80, 40000, synAck), true},
		{"its next segment", dirIn, tcpPkt(fPeer2, fSelf4, 40000, 80, tcpACK), true},
		{".2 to :443", dirIn, tcpPkt(fPeer2, fSelf4, 40001, 443, tcpSYN), true},
		{".2 to :22 (web lists .2, not 22)", dirIn, tcpPkt(fPeer2, fSelf4, 40002, 22, tcpSYN), false},
		{".3 to :80 (no rule for .3 tcp)", dirIn, tcpPkt(fPeer3, fSelf4, 40003, 80, tcpSYN), false},
		{"stranger to :80", dirIn, tcpPkt(fStranger, fSelf4, 40003, 80, tcpSYN), false},
		{"our SYN-ACK to .3 without its SYN", dirOut, tcpPkt(fSelf4, fPeer3, 80, 40003, synAck), true}, // out-tcp allows any tcp to the overlay
		{"out tcp to .3:22", dirOut, tcpPkt(fSelf4, fPeer3, 50000, 22, tcpSYN), true},
		{"reply from .3:22", dirIn, tcpPkt(fPeer3, fSelf4, 22, 50000, synAck), true},
		{".3:22 to another port of ours", dirIn, tcpPkt(fPeer3, fSelf4, 22, 50001, tcpACK), false},
		{"ICMP error from .3 about our tcp to :22", dirIn, icmpErrPkt(fPeer3, fSelf4, tcpPkt(fSelf4, fPeer3, 50000, 22, tcpACK)), true},
		{"ICMP error from .3 about no connection", dirIn, icmpErrPkt(fPeer3, fSelf4, tcpPkt(fSelf4, fPeer3, 50009, 22, tcpACK)), false},
		{"out udp4 to .3:53 (no udp4 outbound)", dirOut, udpPkt(fSelf4, fPeer3, 33000, 53), false},
		{"udp reply from .3:53 without request", dirIn, udpPkt(fPeer3, fSelf4, 53, 33000), false},
		{"echo request from .5", dirIn, echoPkt(fPeer5, fSelf4, 9, false), true},
		{"our echo reply", dirOut, echoPkt(fSelf4, fPeer5, 9, true), true},
		{"unsolicited echo reply from .5", dirIn, echoPkt(fPeer5, fSelf4, 10, true), false},
		{"our echo request to .5 (no icmp outbound)", dirOut, echoPkt(fSelf4, fPeer5, 11, false), false},
		{"echo6 request from ::2", dirIn, echoPkt(fV6P2, fSelf6, 12, false), true},
		{"udp6 to ::2:5005", dirOut, udpPkt(fSelf6, fV6P2, 34000, 5005), true},
		{"its reply", dirIn, udpPkt(fV6P2, fSelf6, 5005, 34000), true},
		{"udp6 to ::2:6000", dirOut, udpPkt(fSelf6, fV6P2, 34000, 6000), false},
		{"udp6 dns from ::2", dirIn, udpPkt(fV6P2, fSelf6, 34001, 53), true},
		{"tcp from .2 to another node's address", dirIn, tcpPkt(fPeer2, fPeer5, 40000, 80, tcpSYN), false},
		{"to multicast", dirOut, udpPkt(fSelf6, netip.MustParseAddr("ff02::16"), 1, 2), false},
	}
	for _, s := range steps {
		if got := e.check(s.dir, s.pkt); got != s.want {
			t.Errorf("%s (%s): allowed=%v, want %v", s.name, s.dir, got, s.want)
		}
	}
	if a, d := e.ruleCount(dirIn, "web"); a != 4 || d != 1 {
		t.Errorf("web: allowed %d denied %d, want 4 and 1", a, d)
	}
	if a, _ := e.ruleCount(dirOut, "out-tcp"); a != 4 { // SYN-ACK to .3, SYN to .3, its reply, the ICMP error
		t.Errorf("out-tcp allowed %d, want 4", a)
	}
	if _, d := e.ruleCount(dirIn, "ping"); d != 3 { // .3 to :80, .3:22 to another port, udp from .3:53
		t.Errorf("ping denied %d, want 3", d)
	}
	st := e.f.status()
	if st.PolicyVersion != 7 || st.DefaultDenied.Inbound != 1 || st.DefaultDenied.Outbound != 0 {
		t.Errorf("status: %+v", st)
	}
	if st.Unmatched.Inbound != 2 {
		t.Errorf("unmatched inbound %d, want 2 (ICMP error, echo reply)", st.Unmatched.Inbound)
	}
	// Outbound denials are answered locally: udp4 → ICMP port unreachable,
	// echo → admin prohibited, udp6 → ICMPv6 port unreachable. Multicast
	// never.
	rejects := e.sink.takeN(3, time.Second)
	if len(rejects) != 3 || st.Rejects != 3 {
		t.Fatalf("rejects: %d packets, counted %d; want 3", len(rejects), st.Rejects)
	}
	wantTC := [][2]uint8{{3, 3}, {3, 13}, {1, 4}}
	for i, r := range rejects {
		var p pktInfo
		if parsePacket(r, &p) != parseOK || p.icmp != icmpError {
			t.Fatalf("reject %d does not parse as an ICMP error: %x", i, r)
		}
		l4 := r[p.ipLen-p.l4Len:]
		if [2]uint8{l4[0], l4[1]} != wantTC[i] {
			t.Errorf("reject %d: type/code %d/%d, want %v", i, l4[0], l4[1], wantTC[i])
		}
		if addr16(p.key.dst) != fSelf4 && addr16(p.key.dst) != fSelf6 {
			t.Errorf("reject %d goes to %v, not to us", i, addr16(p.key.dst))
		}
	}
}

// TestFilterInvalid: malformed packets and fragments are denied, counted,
// and never panic the parser.
func TestFilterInvalid(t *testing.T) {
	e := newTestFilter(t, &wire.Filter{Inbound: []wire.FilterRule{{Rule: "all", Peers: []string{"0.0.0.0/0", "::/0"}}}}, filterConfig{})
	good := tcpPkt(fPeer2, fSelf4, 1, 2, tcpSYN)
	frag := append([]byte(nil), good...)
	frag[6] = 0x20 // MF
	frag[10], frag[11] = 0, 0
	off := append([]byte(nil), good...)
	off[7] = 1 // offset 8
	v6 := tcpPkt(fV6P2, fSelf6, 1, 2, tcpSYN)
	v6frag := append(append(append([]byte(nil), v6[:40]...), protoTCP, 0, 0, 0, 0, 0, 0, 1), v6[40:]...)
	v6frag[6] = protoFragment
	binary.BigEndian.PutUint16(v6frag[4:], uint16(len(v6frag)-40))
	badLen := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(badLen[2:], 200)
	shortTCP := append([]byte(nil), good[:30]...)
	binary.BigEndian.PutUint16(shortTCP[2:], 30)
	v4icmp6 := testPkt{src: fPeer2, dst: fSelf4, proto: protoICMPv6, icmpType: 128}.build()
	cases := []struct {
		name   string
		pkt    []byte
		reason string
	}{
		{"empty", nil, "malformed"},
		{"version 5", []byte{0x50, 0, 0, 0}, "malformed"},
		{"v4 MF", frag, "fragment"},
		{"v4 offset", off, "fragment"},
		{"v6 fragment header", v6frag, "fragment"},
		{"total length past the end", badLen, "malformed"},
		{"tcp header cut", shortTCP, "malformed"},
		{"icmpv6 in ipv4", v4icmp6, "malformed"},
	}
	for _, c := range cases {
		if e.check(dirIn, c.pkt) {
			t.Errorf("%s: allowed", c.name)
		}
	}
	if !e.check(dirIn, good) || !e.check(dirIn, v6) {
		t.Fatal("the well-formed packets are denied")
	}
	got := map[string]uint64{}
	for _, iv := range e.f.status().Invalid {
		got[iv.Reason] += iv.Packets
	}
	if got["malformed"] != 5 || got["fragment"] != 3 {
		t.Errorf("invalid counts %v, want malformed 5, fragment 3", got)
	}
}

// TestFilterNilDeniesAll: no filter in the map (and before the first map)
// means nothing passes, and outbound attempts are rejected locally.
func TestFilterNilDeniesAll(t *testing.T) {
	e := newTestFilter(t, nil, filterConfig{})
	if e.check(dirIn, tcpPkt(fPeer2, fSelf4, 1, 80, tcpSYN)) || e.check(dirOut, tcpPkt(fSelf4, fPeer2, 1, 80, tcpSYN)) {
		t.Fatal("a nil filter allowed a packet")
	}
	st := e.f.status()
	if st.DefaultDenied != (FilterDirCounts{1, 1}) || st.Rejects != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestFilterRevocation: a new map without the allowing rule stops live
// connections in both directions.
func TestFilterRevocation(t *testing.T) {
	e := newTestFilter(t, testFilter(), filterConfig{})
	if !e.check(dirIn, tcpPkt(fPeer2, fSelf4, 40000, 80, tcpSYN)) || !e.check(dirOut, tcpPkt(fSelf4, fPeer2, 80, 40000, tcpSYN|tcpACK)) {
		t.Fatal("connection not allowed")
	}
	// An equal filter keeps the flow and its rule set.
	gen := e.f.ruleSet().gen
	e.f.setFilter(testFilter(), fSelf4, fSelf6)
	if e.f.ruleSet().gen != gen {
		t.Fatal("an unchanged filter was recompiled")
	}
	e.check(dirOut, tcpPkt(fSelf4, fPeer3, 50000, 22, tcpSYN))
	nf := testFilter()
	nf.PolicyVersion = 8
	nf.Inbound = nf.Inbound[1:] // web is gone
	e.f.setFilter(nf, fSelf4, fSelf6)
	if e.check(dirIn, tcpPkt(fPeer2, fSelf4, 40000, 80, tcpACK)) {
		t.Error("revoked connection: the peer's segment is allowed")
	}
	// A connection still allowed survives the change.
	if !e.check(dirIn, tcpPkt(fPeer3, fSelf4, 22, 50000, tcpACK)) {
		t.Error("reply of a still-allowed connection denied after a policy change")
	}
	e.f.setFilter(&wire.Filter{PolicyVersion: 9}, fSelf4, fSelf6)
	if e.check(dirIn, tcpPkt(fPeer3, fSelf4, 22, 50000, tcpACK)) || e.check(dirOut, tcpPkt(fSelf4, fPeer3, 50000, 22, tcpACK)) {
		t.Error("a connection survived the removal of every rule")
	}
	if d := e.denials(); len(d) != 3 || d[0].PolicyVersion != 8 || d[2].PolicyVersion != 9 {
		t.Errorf("denials %+v: want one under policy 8, two under 9", d)
	}
}

func (e *testFilterEnv) denials() []FilterDenial {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]FilterDenial(nil), e.deny...)
}

// TestFilterFlowTimeoutAndEviction: idle flows expire; a full table evicts
// and counts.
func TestFilterFlowTimeoutAndEviction(t *testing.T) {
	e := newTestFilter(t, testFilter(), filterConfig{MaxFlows: flowShards, UDPTimeout: time.Minute})
	if !e.check(dirOut, udpPkt(fSelf6, fV6P2, 34000, 5005)) {
		t.Fatal("udp6 denied")
	}
	e.clock.Add(59 * time.Second)
	if !e.check(dirIn, udpPkt(fV6P2, fSelf6, 5005, 34000)) {
		t.Fatal("reply within the timeout denied")
	}
	e.clock.Add(61 * time.Second)
	if e.check(dirIn, udpPkt(fV6P2, fSelf6, 5005, 34000)) {
		t.Fatal("reply after the idle timeout allowed")
	}
	// One flow per shard: many connections evict each other.
	for port := range uint16(200) {
		e.check(dirOut, tcpPkt(fSelf4, fPeer3, 10000+port, 22, tcpSYN))
	}
	if n := e.f.flows.len(); n > flowShards {
		t.Fatalf("flow table holds %d, bound %d", n, flowShards)
	}
	if ev := e.f.status().FlowsEvicted; ev < 200-flowShards {
		t.Fatalf("evicted %d, want at least %d", ev, 200-flowShards)
	}
}

// TestFilterDenyLogRateLimited: one log line per (src, dst, port, reason)
// per interval, with the rule and policy version; every denial reaches
// OnDeny.
func TestFilterDenyLogRateLimited(t *testing.T) {
	e := newTestFilter(t, testFilter(), filterConfig{})
	pkt := tcpPkt(fPeer2, fSelf4, 40002, 22, tcpSYN)
	for range 5 {
		e.check(dirIn, pkt)
	}
	e.check(dirIn, tcpPkt(fStranger, fSelf4, 40002, 22, tcpSYN))
	logs := e.logs.denials()
	if len(logs) != 2 {
		t.Fatalf("%d denial logs, want 2: %v", len(logs), logs)
	}
	want := map[string]string{"src": "100.96.0.2", "dst": "100.96.0.1", "proto": "tcp", "port": "22", "direction": "inbound", "rule": "web", "policy_version": "7"}
	for k, v := range want {
		if logs[0][k] != v {
			t.Errorf("log field %s=%q, want %q (%v)", k, logs[0][k], v, logs[0])
		}
	}
	if logs[1]["rule"] != defaultDenyRule {
		t.Errorf("second denial blamed %q, want %q", logs[1]["rule"], defaultDenyRule)
	}
	if d := e.denials(); len(d) != 6 || d[0].Rule != "web" || d[0].Port != 22 || d[0].Src != fPeer2 {
		t.Fatalf("OnDeny got %d denials: %+v", len(d), d)
	}
	e.clock.Add(11 * time.Second)
	e.check(dirIn, pkt)
	if n := len(e.logs.denials()); n != 3 {
		t.Fatalf("after the interval: %d logs, want 3", n)
	}
}

// TestRejectPackets checks the RST and ICMP answers field by field.
func TestRejectPackets(t *testing.T) {
	var p pktInfo
	out := make([]byte, maxICMPv6Error)

	syn := testPkt{src: fSelf4, dst: fPeer3, proto: protoTCP, sport: 50000, dport: 22, flags: tcpSYN}.build()
	parsePacket(syn, &p)
	n := buildReject(out, syn, &p)
	rst := out[:n]
	var r pktInfo
	if parsePacket(rst, &r) != parseOK || r.key != p.key.reverse() {
		t.Fatalf("RST tuple %+v, want %+v", r.key, p.key.reverse())
	}
	if r.tcpFlags != tcpRST|tcpACK || r.tcpAck != 1001 || r.tcpSeq != 0 {
		t.Errorf("RST to a SYN: flags %#x seq %d ack %d, want RST|ACK, 0, 1001", r.tcpFlags, r.tcpSeq, r.tcpAck)
	}
	if checksum(rst[:20], 0) != 0xffff || checksum(rst[20:], pseudoSum(&p, protoTCP, 20)) != 0xffff {
		t.Error("RST checksums invalid")
	}
	ack := testPkt{src: fSelf6, dst: fV6P2, proto: protoTCP, sport: 1, dport: 2, flags: tcpACK | tcpFIN, payload: []byte("x")}.build()
	parsePacket(ack, &p)
	rst = out[:buildReject(out, ack, &p)]
	parsePacket(rst, &r)
	if r.tcpFlags != tcpRST || r.tcpSeq != 2000 {
		t.Errorf("RST to an ACK: flags %#x seq %d, want RST, 2000", r.tcpFlags, r.tcpSeq)
	}
	if checksum(rst[40:], pseudoSum(&p, protoTCP, 20)) != 0xffff {
		t.Error("IPv6 RST checksum invalid")
	}
	// No answer to a RST or an ICMP error.
	for _, pkt := range [][]byte{
		tcpPkt(fSelf4, fPeer3, 1, 2, tcpRST),
		icmpErrPkt(fSelf4, fPeer3, udpPkt(fPeer3, fSelf4, 1, 2)),
	} {
		parsePacket(pkt, &p)
		if n := buildReject(out, pkt, &p); n != 0 {
			t.Errorf("answered %x with %d bytes", pkt, n)
		}
	}
	// ICMPv6 checksum includes the pseudo-header; quotes are bounded.
	big := testPkt{src: fSelf6, dst: fV6P2, proto: protoUDP, sport: 1, dport: 2, payload: make([]byte, 2000)}.build()
	parsePacket(big, &p)
	n = buildReject(out, big, &p)
	if n != maxICMPv6Error {
		t.Errorf("ICMPv6 error of %d bytes, want %d", n, maxICMPv6Error)
	}
	if checksum(out[40:n], pseudoSum(&p, protoICMPv6, n-40)) != 0xffff {
		t.Error("ICMPv6 checksum invalid")
	}
}

// FuzzFilterPacket: the parser, the decision and the reject builder never
// panic, whatever the bytes, and what parses is within the packet.
func FuzzFilterPacket(f *testing.F) {
	quoted := tcpPkt(fSelf4, fPeer3, 50000, 22, tcpACK)
	for _, s := range [][]byte{
		tcpPkt(fPeer2, fSelf4, 40000, 80, tcpSYN),
		udpPkt(fV6P2, fSelf6, 5005, 34000),
		echoPkt(fPeer5, fSelf4, 9, false),
		echoPkt(fV6P2, fSelf6, 9, true),
		icmpErrPkt(fPeer3, fSelf4, quoted),
		testPkt{src: fV6P2, dst: fSelf6, proto: protoICMPv6, icmpType: icmp6Unreach, payload: udpPkt(fSelf6, fV6P2, 1, 2)}.build(),
		testPkt{src: fV6P2, dst: fSelf6, proto: protoHopByHop, payload: append([]byte{protoUDP, 0, 0, 0, 0, 0, 0, 0}, udpPkt(fV6P2, fSelf6, 1, 2)[40:]...)}.build(),
		testPkt{src: fPeer2, dst: fSelf4, proto: 47, payload: []byte{1, 2, 3, 4}}.build(),
		{0x45},
		{0x60, 0, 0, 0, 0, 0, 0},
	} {
		f.Add(s)
	}
	sk := newSink(f)
	fd := newFilterDevice(sk.ch.TUN(), filterConfig{Logger: slog.New(slog.DiscardHandler)})
	fd.setFilter(testFilter(), fSelf4, fSelf6)
	out := make([]byte, maxICMPv6Error)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var p pktInfo
		if parsePacket(pkt, &p) == parseOK {
			if p.ipLen > len(pkt) || p.l4Len > p.ipLen {
				t.Fatalf("parsed lengths ip %d l4 %d beyond the packet (%d)", p.ipLen, p.l4Len, len(pkt))
			}
			if n := buildReject(out, pkt, &p); n > len(out) {
				t.Fatalf("reject of %d bytes", n)
			}
		}
		fd.check(dirIn, pkt, fd.ruleSet(), fd.clock(), &p)
		fd.check(dirOut, pkt, fd.ruleSet(), fd.clock(), &p)
	})
}
