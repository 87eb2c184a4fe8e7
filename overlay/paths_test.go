package overlay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/agentnet/agentnet/relay/turnclient"
	"github.com/agentnet/agentnet/wire"
)

// pathNode is a peerBind with disco keys and running probe loop over
// loopback, its ReceiveFuncs drained like wireguard-go would; WireGuard
// packets it receives arrive on rx.
type pathNode struct {
	p   *peerBind
	key [32]byte
	dk  *discoKeys
	rx  chan pathRx
}

type pathRx struct {
	typ uint32
	ep  conn.Endpoint
}

func newPathNode(t *testing.T, key byte) *pathNode {
	t.Helper()
	var k [32]byte
	k[0] = key
	pub, priv, _ := box.GenerateKey(rand.Reader)
	n := &pathNode{key: k, dk: &discoKeys{pub: *pub, priv: *priv}, rx: make(chan pathRx, 256)}
	n.p = newPeerBind(NewBind(BindConfig{ListenAddr: loopback4}), k, slog.New(slog.DiscardHandler))
	n.p.disco = n.dk
	fns, _, err := n.p.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs, sizes, eps := [][]byte{make([]byte, 2048)}, make([]int, 1), make([]conn.Endpoint, 1)
			for {
				got, err := fn(bufs, sizes, eps)
				if err != nil {
					return
				}
				for i := range got {
					if sizes[i] > 0 {
						n.rx <- pathRx{typ: msgType(bufs[i][:sizes[i]]), ep: eps[i]}
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.p.probeLoop(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if a := n.p.alloc.Load(); a != nil {
			a.Close()
		}
		n.p.Close()
		wg.Wait()
	})
	return n
}

func (n *pathNode) addr() netip.AddrPort { return n.p.LocalAddr() }

func (n *pathNode) info(eps ...netip.AddrPort) peerInfo {
	pi := peerInfo{key: n.key, name: "peer", disco: n.dk.pub, hasDisco: true, endpoints: eps}
	if a := n.p.alloc.Load(); a != nil {
		pi.relayed = []netip.AddrPort{a.RelayedAddr()}
	}
	return pi
}

func (n *pathNode) allocate(t *testing.T, r wire.Relay) {
	t.Helper()
	a, err := turnclient.Allocate(context.Background(), turnclient.Config{Relay: r, Transport: wire.TransportUDP, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	n.p.setRelays([]wire.Relay{r})
	n.p.setAlloc(a)
	go n.p.readAlloc(a)
	if err := a.Permit(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
}

func (n *pathNode) path(peer [32]byte) *PathStatus { return n.p.pathStatus(peer) }

func waitCond(t *testing.T, within time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestPathsProbeUpgradeFallback: direct probes verify a path; a better
// candidate appearing is taken; a direct path that stops answering falls
// back to the relay within a few seconds, and data then flows via relay.
func TestPathsProbeUpgradeFallback(t *testing.T) {
	fx := startTURNFixture(t)
	a, b := newPathNode(t, 0xa0), newPathNode(t, 0xb0)
	a.allocate(t, fx.relay)
	b.allocate(t, fx.relay)
	// a first knows b only at an address where nobody answers.
	dead, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer dead.Close()
	deadAP := dead.LocalAddr().(*net.UDPAddr).AddrPort()
	a.p.setPeerInfo([]peerInfo{b.info(deadAP)})
	b.p.setPeerInfo([]peerInfo{a.info(a.addr())})
	waitCond(t, 5*time.Second, "b: verified direct path to a", func() bool {
		ps := b.path(a.key)
		return ps != nil && ps.Kind == "direct" && ps.Verified && ps.Endpoint == a.addr().String() && ps.RTTms > 0
	})
	// a: its only direct candidate is dead; b's pings reach a from b's
	// socket, a peer-reflexive candidate that a verifies and takes.
	waitCond(t, 5*time.Second, "a: learns b's address from its pings and goes direct", func() bool {
		ps := a.path(b.key)
		return ps != nil && ps.Kind == "direct" && ps.Verified && ps.Endpoint == b.addr().String()
	})
	// A better path appearing (the map now lists it) is used.
	a.p.setPeerInfo([]peerInfo{b.info(deadAP, b.addr())})
	if ps := a.path(b.key); ps.Endpoint != b.addr().String() {
		t.Fatalf("a's path after the map update: %+v", ps)
	}

	// b's direct traffic from a is now lost (a NAT dropping it): b must
	// fall back to the relay within pathTimeout plus one ping interval.
	drop := func(ap netip.AddrPort) bool { return ap == a.addr() }
	b.p.testDrop.Store(&drop)
	took := waitCond(t, pathTimeout+3*time.Second, "b falls back to the relay", func() bool {
		ps := b.path(a.key)
		return ps != nil && ps.Kind == "relay"
	})
	t.Logf("fallback to relay after %v", took)
	ps := b.path(a.key)
	if ps.Relay != "fixture" || ps.Transport != "udp" || ps.Endpoint != a.p.alloc.Load().RelayedAddr().String() {
		t.Fatalf("relay path %+v", ps)
	}
	// Data from b to a now goes through a's allocation.
	for len(a.rx) > 0 {
		<-a.rx
	}
	ep, _ := b.p.ParseEndpoint(peerEndpointString(a.key))
	if err := b.p.Send([][]byte{pbPacket(wgMsgData, 7)}, ep); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-a.rx:
		if r.typ != wgMsgData || r.ep != conn.Endpoint(a.p.byKey[b.key]) {
			t.Fatalf("a received type %d from %v, want data from peer b", r.typ, r.ep)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("data over the relay did not arrive")
	}
	if b.p.pathSwitches.Load() < 2 || b.p.pongsRecv.Load() == 0 {
		t.Fatalf("b counters: switches %d pongs %d", b.p.pathSwitches.Load(), b.p.pongsRecv.Load())
	}
}

// TestPathsBadDisco: disco packets that do not open — garbage, a ping
// sealed by an unknown key, a tampered ping — are dropped, counted and
// never answered.
func TestPathsBadDisco(t *testing.T) {
	a, b := newPathNode(t, 0xa0), newPathNode(t, 0xb0)
	a.p.setPeerInfo([]peerInfo{b.info(b.addr())})
	evil, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer evil.Close()
	// b does not know a: b's pings to a are from an unknown disco key.
	strangerPub, strangerPriv, _ := box.GenerateKey(rand.Reader)
	var shared [32]byte
	box.Precompute(&shared, &a.dk.pub, strangerPriv)
	ping := sealDisco(strangerPub, &shared, discoMsg{kind: discoPing, txid: newTxID(), wgKey: b.key})
	garbage := append([]byte(discoMagic), make([]byte, 100)...)
	copy(garbage[len(discoMagic):], b.dk.pub[:]) // claims to be b, does not open
	var bShared [32]byte
	bPub := b.dk.pub
	box.Precompute(&bShared, &a.dk.pub, &b.dk.priv)
	a.p.setPeerInfo([]peerInfo{b.info(b.addr())})
	tampered := sealDisco(&bPub, &bShared, discoMsg{kind: discoPing, txid: newTxID(), wgKey: b.key})
	tampered[len(tampered)-3] ^= 0x40
	wrongKey := sealDisco(&bPub, &bShared, discoMsg{kind: discoPing, txid: newTxID(), wgKey: [32]byte{9}})
	before := a.p.discoBad.Load()
	for _, pkt := range [][]byte{ping, garbage, tampered, wrongKey, {0x41, 1, 2}} {
		evil.WriteToUDPAddrPort(pkt, a.addr())
	}
	waitCond(t, 3*time.Second, "bad disco packets counted", func() bool { return a.p.discoBad.Load()-before >= 4 })
	evil.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := evil.ReadFromUDPAddrPort(make([]byte, 1500)); err == nil {
		t.Fatalf("a answered an unauthenticated disco packet (%d bytes)", n)
	}
	a.p.mu.Lock()
	learned := a.p.byKey[b.key].cands[evil.LocalAddr().(*net.UDPAddr).AddrPort()]
	a.p.mu.Unlock()
	if learned != nil {
		t.Fatal("an unauthenticated packet added a candidate")
	}
}

// TestPathsSpoofedSourceCannotMovePath: a WireGuard packet from a new
// source carrying a peer's session index is attributed to that peer (never
// handed to wireguard-go as a raw address) and the source is verified with
// a ping; without a pong (a spoofer cannot answer) the path stays put.
func TestPathsSpoofedSourceCannotMovePath(t *testing.T) {
	a, b := newPathNode(t, 0xa0), newPathNode(t, 0xb0)
	a.p.setPeerInfo([]peerInfo{b.info(b.addr())})
	b.p.setPeerInfo([]peerInfo{a.info(a.addr())})
	waitCond(t, 5*time.Second, "a: direct to b", func() bool {
		ps := a.path(b.key)
		return ps != nil && ps.Verified
	})
	// a sends a handshake initiation with sender index 0x1234 to b.
	ep, _ := a.p.ParseEndpoint(peerEndpointString(b.key))
	init := pbPacket(wgMsgInitiation, 1)
	binary.LittleEndian.PutUint32(init[4:], 0x1234)
	if err := a.p.Send([][]byte{init}, ep); err != nil {
		t.Fatal(err)
	}
	spoof, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer spoof.Close()
	data := pbPacket(wgMsgData, 2)
	binary.LittleEndian.PutUint32(data[4:], 0x1234) // receiver index: a's session
	for len(a.rx) > 0 {
		<-a.rx
	}
	spoof.WriteToUDPAddrPort(data, a.addr())
	select {
	case r := <-a.rx:
		if r.ep != conn.Endpoint(a.p.byKey[b.key]) {
			t.Fatalf("packet from a new source delivered with endpoint %v, want peer b's", r.ep)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("attributed packet not delivered")
	}
	if a.p.indexAttributed.Load() != 1 {
		t.Fatalf("index attributed %d, want 1", a.p.indexAttributed.Load())
	}
	// The spoofer gets a ping (verification) but cannot answer it.
	spoof.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := spoof.ReadFromUDPAddrPort(buf)
	if err != nil || !isDisco(buf[:n]) {
		t.Fatalf("no verification ping to the new source: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	if ps := a.path(b.key); ps.Endpoint != b.addr().String() {
		t.Fatalf("spoofed packet moved the path to %s", ps.Endpoint)
	}
}
