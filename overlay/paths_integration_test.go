package overlay_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
)

// peerPath returns from's path to the peer called to.
func peerPath(from *overlay.Node, to string) *overlay.PathStatus {
	for _, p := range from.Status().Peers {
		if p.Name == to {
			return p.Path
		}
	}
	return nil
}

func waitPath(t *testing.T, from *overlay.Node, to, kind string, within time.Duration) *overlay.PathStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ps := peerPath(from, to)
		if ps != nil && ps.Kind == kind && (kind != "direct" || ps.Verified) {
			return ps
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(ps)
			t.Fatalf("%s → %s: path %s, want %s within %v", from.Self().Name, to, b, kind, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRelayThenDirect: two nodes whose direct traffic is dropped reach each
// other through a real TURN relay, carry a checksummed TCP stream over it,
// and move to the direct path mid-stream once direct traffic passes,
// without breaking the stream; status names each path exactly.
func TestRelayThenDirect(t *testing.T) {
	if testing.Short() {
		t.Skip("relay integration test")
	}
	rl := overlay.StartRelayForTest(t)
	net0 := testnet.New(t)
	a := net0.StartNode("alpha")
	b := net0.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	listens := map[netip.AddrPort]bool{}
	for _, n := range []*overlay.Node{a, b} {
		listens[netip.MustParseAddrPort(n.Status().Listen)] = true
	}
	drop := func(ap netip.AddrPort) bool { return listens[ap] }
	for _, n := range []*overlay.Node{a, b} {
		n.DropDirectForTest(drop)
		n.SetRelaysForTest([]wire.Relay{rl})
	}
	// Both publish their relayed addresses; the direct path (never
	// verified while dropped) gives way to the relay.
	for _, pair := range [][2]*overlay.Node{{a, b}, {b, a}} {
		ps := waitPath(t, pair[0], pair[1].Self().Name, "relay", 20*time.Second)
		if ps.Relay != "fixture" || ps.Transport != wire.TransportUDP || ps.Reason == "" || ps.Endpoint == "" {
			t.Fatalf("relay path status %+v: want relay fixture via udp with a reason", *ps)
		}
	}
	st := a.Status()
	if st.Paths.Relay != "fixture" || st.Paths.RelayTransport != "udp" || st.Paths.Relayed == "" {
		t.Fatalf("own relay status %+v", st.Paths)
	}

	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const total = 8 << 20
	got := make(chan [32]byte, 1)
	var received atomic.Int64
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(io.MultiWriter(h, countWriter{&received}), c)
		got <- [32]byte(h.Sum(nil))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp", "bravo:7000")
	if err != nil {
		t.Fatalf("dial over relay: %v", err)
	}
	want := sha256.New()
	rng := rand.New(rand.NewPCG(1, 2))
	chunk := make([]byte, 64<<10)
	write := func(n int) {
		for sent := 0; sent < n; sent += len(chunk) {
			for i := range chunk {
				chunk[i] = byte(rng.Uint32())
			}
			want.Write(chunk)
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write(chunk); err != nil {
				t.Fatalf("write after %d bytes: %v", sent, err)
			}
		}
	}
	write(total / 2)
	for received.Load() < total/2 {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d bytes arrived over the relay", received.Load(), total/2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ps := peerPath(a, "bravo"); ps == nil || ps.Kind != "relay" {
		t.Fatalf("path changed while direct traffic was dropped: %+v", ps)
	}
	if rx := a.Status().Paths.RelayRxPackets + b.Status().Paths.RelayRxPackets; rx == 0 {
		t.Fatal("half the stream sent, yet no packet came through a relay allocation")
	}

	// Direct traffic passes again; a coordinator probe makes both sides
	// probe at once, and both upgrade.
	for _, n := range []*overlay.Node{a, b} {
		n.DropDirectForTest(nil)
	}
	for i, pair := range [][2]*overlay.Node{{a, b}, {b, a}} {
		peer := pair[1].Self()
		pair[0].DeliverProbeForTest(&wire.Probe{Peer: peer.Name, WGKey: peer.WGKey, Endpoints: peer.Endpoints, DelayMS: 100, Generation: uint64(10 + i)})
	}
	for _, pair := range [][2]*overlay.Node{{a, b}, {b, a}} {
		ps := waitPath(t, pair[0], pair[1].Self().Name, "direct", 10*time.Second)
		if !listens[netip.MustParseAddrPort(ps.Endpoint)] || ps.Reason != "" || ps.Transport != "udp" {
			t.Fatalf("direct path status %+v", *ps)
		}
	}
	write(total / 2)
	c.Close()
	select {
	case sum := <-got:
		if !bytes.Equal(sum[:], want.Sum(nil)) {
			t.Fatal("stream checksum differs after the path change")
		}
	case <-ctx.Done():
		t.Fatal("stream did not complete")
	}
	if st := a.Status(); st.Paths.ProbesAnswered == 0 || st.Paths.PathSwitches < 1 {
		t.Fatalf("counters %+v: want probes answered and a path switch (relay to direct)", st.Paths)
	}
}

type countWriter struct{ n *atomic.Int64 }

func (w countWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// TestRelayUDPBlocked: a node whose UDP to the relay is blocked (its UDP
// relay address is a silent socket) allocates over TCP and reaches a peer
// that has UDP, through its own allocation; status says why.
func TestRelayUDPBlocked(t *testing.T) {
	if testing.Short() {
		t.Skip("relay integration test")
	}
	rl := overlay.StartRelayForTest(t)
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	blocked := rl
	blocked.Addrs = nil
	for _, ra := range rl.Addrs {
		if ra.Transport == wire.TransportUDP {
			ra.Addr = silent.LocalAddr().(*net.UDPAddr).AddrPort()
		}
		blocked.Addrs = append(blocked.Addrs, ra)
	}
	net0 := testnet.New(t)
	a := net0.StartNode("alpha")
	b := net0.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	listens := map[netip.AddrPort]bool{}
	for _, n := range []*overlay.Node{a, b} {
		listens[netip.MustParseAddrPort(n.Status().Listen)] = true
	}
	drop := func(ap netip.AddrPort) bool { return listens[ap] }
	a.DropDirectForTest(drop)
	b.DropDirectForTest(drop)
	a.SetRelaysForTest([]wire.Relay{blocked})
	b.SetRelaysForTest([]wire.Relay{rl})

	// Until the TCP allocation exists alpha sends to bravo's relayed
	// address from its socket; then through its own allocation.
	var ps *overlay.PathStatus
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ps = peerPath(a, "bravo"); ps != nil && ps.Transport == wire.TransportTCP {
			break
		}
	}
	if ps == nil || ps.Kind != "relay" || ps.Transport != wire.TransportTCP || ps.Reason != "UDP to relay blocked; using tcp" {
		t.Fatalf("alpha's path %+v: want relay via tcp, reason UDP blocked", ps)
	}
	if ps := waitPath(t, b, "alpha", "relay", 10*time.Second); ps.Transport != wire.TransportUDP {
		t.Fatalf("bravo's path %+v: want relay via udp", *ps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, pair := range [][2]*overlay.Node{{a, b}, {b, a}} {
		peer := pair[1].Self()
		if _, err := pair[0].Ping(ctx, peer.Name); err != nil {
			t.Fatalf("%s → %s over the relay: %v", pair[0].Self().Name, peer.Name, err)
		}
	}
}

// TestForceRelay: a node with ForceRelay never probes or takes a direct
// path; its traffic goes through the relay and status says why.
func TestForceRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("relay integration test")
	}
	rl := overlay.StartRelayForTest(t)
	net0 := testnet.New(t)
	cfg := net0.NodeConfig("alpha")
	cfg.ForceRelay = true
	a := net0.StartNodeConfig(cfg)
	b := net0.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	for _, n := range []*overlay.Node{a, b} {
		n.SetRelaysForTest([]wire.Relay{rl})
	}
	ps := waitPath(t, a, "bravo", "relay", 20*time.Second)
	if ps.Reason != "direct paths disabled on this node (--force-relay)" {
		t.Fatalf("forced relay path %+v: want the reason to name --force-relay", *ps)
	}
	// The first pings may fall into the handshake; retry for a while
	// (each ping is one ICMP echo).
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := a.Ping(ctx, "bravo")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping over the forced relay: %v", err)
		}
	}
	// bravo is not forced: its probes find the direct path to alpha and
	// take it. So the direct path works, and still alpha must not use it.
	waitPath(t, b, "alpha", "direct", 20*time.Second)
	if ps := peerPath(a, "bravo"); ps == nil || ps.Kind != "relay" {
		t.Fatalf("forced relay path became %+v", ps)
	}
	if rx := a.Status().Paths.RelayRxPackets + b.Status().Paths.RelayRxPackets; rx == 0 {
		t.Fatal("no packet came through a relay allocation")
	}
}
