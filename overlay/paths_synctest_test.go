package overlay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/crypto/nacl/box"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/agentnet/agentnet/wire"
)

// These tests run two peerBinds over a memNet inside a synctest bubble: the
// probe loops' tickers and the path timeouts run on the bubble's fake
// clock, which jumps ahead whenever every goroutine waits, so the tests
// state exact deadlines and take no real time. (time.Sleep in a bubble is
// that fake clock moving on, not a wait.)

var memRelay = wire.Relay{Name: "mem"}

type pathRx struct {
	typ uint32
	ep  conn.Endpoint
}

// bubbleNode is a peerBind with disco keys, its own relay allocation, a
// running probe loop and relay reader, and receive functions drained into
// rx, on a memNet.
type bubbleNode struct {
	p     *peerBind
	key   [32]byte
	dk    *discoKeys
	sock  *memSocket
	alloc *memAlloc
	rx    chan pathRx
}

// newBubbleNode starts a node; stop ends its goroutines (before the bubble
// ends, which waits for them).
func newBubbleNode(t *testing.T, mn *memNet, key [32]byte) (n *bubbleNode, stop func()) {
	t.Helper()
	n = &bubbleNode{key: key, dk: newDiscoKeys(t), sock: mn.socket(), alloc: mn.alloc(memRelay), rx: make(chan pathRx, 256)}
	n.p = newPeerBind(peerBindConfig{Socket: n.sock, Self: key, Logger: slog.New(slog.DiscardHandler)})
	n.p.disco = n.dk
	n.p.setRelays([]wire.Relay{memRelay})
	n.p.setAlloc(n.alloc)
	fns, _, err := n.p.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Go(func() {
			bufs, sizes, eps := [][]byte{make([]byte, 2048)}, make([]int, 1), make([]conn.Endpoint, 1)
			for {
				got, err := fn(bufs, sizes, eps)
				if err != nil {
					return
				}
				for i := range got {
					if sizes[i] > 0 {
						select {
						case n.rx <- pathRx{typ: msgType(bufs[i][:sizes[i]]), ep: eps[i]}:
						default:
						}
					}
				}
			}
		})
	}
	wg.Go(func() { n.p.probeLoop(ctx) })
	wg.Go(func() { n.p.readAlloc(n.alloc) })
	return n, func() {
		cancel()
		n.alloc.Close()
		n.p.Close()
		wg.Wait()
	}
}

// between matches the datagrams between x and y, either way.
func between(x, y netip.AddrPort) func(src, dst netip.AddrPort) bool {
	return func(src, dst netip.AddrPort) bool { return src == x && dst == y || src == y && dst == x }
}

func (n *bubbleNode) addr() netip.AddrPort { return n.sock.addr }

func (n *bubbleNode) info(eps ...netip.AddrPort) peerInfo {
	return peerInfo{key: n.key, name: "peer", disco: n.dk.pub, hasDisco: true, endpoints: eps, relayed: []netip.AddrPort{n.alloc.relayed}}
}

func (n *bubbleNode) path(peer [32]byte) string {
	ps := n.p.pathStatus(peer)
	switch {
	case ps == nil:
		return "none"
	case ps.Kind == "direct" && ps.Verified:
		return "direct " + ps.Endpoint
	case ps.Kind == "direct":
		return "unverified " + ps.Endpoint
	}
	return ps.Kind + " " + ps.Endpoint
}

// until lets fake time pass in steps of 50 ms until ok, failing after
// within; it returns the fake time that took.
func until(t *testing.T, within time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond) // fake time
		synctest.Wait()
	}
	return time.Since(start)
}

// sendData sends a WireGuard data packet from n to peer and waits for it
// at the peer, which must hand it to wireguard-go as n's endpoint.
func sendData(t *testing.T, from, to *bubbleNode) {
	t.Helper()
	for len(to.rx) > 0 {
		<-to.rx
	}
	ep, _ := from.p.ParseEndpoint(peerEndpointString(to.key))
	if err := from.p.Send([][]byte{pbPacket(wgMsgData, 7)}, ep); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
	select {
	case r := <-to.rx:
		if r.typ != wgMsgData || r.ep != conn.Endpoint(to.p.peers().byKey[from.key]) {
			t.Fatalf("received type %d from %v, want data from the peer", r.typ, r.ep)
		}
	default:
		t.Fatal("data did not arrive")
	}
}

// TestPathsSynctestProbeUpgradeFallback: direct probes verify a path in the
// first rounds; a side that only knows a dead address learns the peer's
// real one from its pings; a direct path that stops answering falls back
// to the relay within pathTimeout plus one ping interval, and data then
// flows through the relay.
func TestPathsSynctestProbeUpgradeFallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		a, stopA := newBubbleNode(t, mn, pbHigh)
		defer stopA()
		b, stopB := newBubbleNode(t, mn, pbLow)
		defer stopB()
		dead := mn.newAddr(nil) // nobody answers there
		a.p.setPeerInfo([]peerInfo{b.info(dead)})
		b.p.setPeerInfo([]peerInfo{a.info(a.addr())})

		// Round 1's pre-punch at 0 s, its full ping after prePunchLead
		// (moved by round 2 to 2 s); the pong comes at once.
		took := until(t, 3*time.Second, "b: verified direct path to a", func() bool { return b.path(a.key) == "direct "+a.addr().String() })
		t.Logf("b direct after %v", took)
		until(t, time.Second, "a: learns b's address from its pings and goes direct", func() bool { return a.path(b.key) == "direct "+b.addr().String() })
		sendData(t, a, b)
		sendData(t, b, a)

		// The direct path stops passing: both fall back to the relay
		// within pathTimeout plus one active ping interval.
		mn.setBlock(between(a.addr(), b.addr()))
		took = until(t, pathTimeout+activePingEvery+time.Second, "b falls back to the relay", func() bool {
			return b.path(a.key) == "relay "+a.alloc.relayed.String()
		})
		t.Logf("fallback after %v", took)
		until(t, time.Second, "a falls back to the relay", func() bool { return a.path(b.key) == "relay "+b.alloc.relayed.String() })
		sendData(t, b, a)
		sendData(t, a, b)
		if b.p.pathSwitches.Load() < 1 || b.p.pongsRecv.Load() == 0 || a.p.allocRxPackets.Load() == 0 {
			t.Fatalf("b: switches %d pongs %d; a: relay rx %d", b.p.pathSwitches.Load(), b.p.pongsRecv.Load(), a.p.allocRxPackets.Load())
		}
	})
}

// TestPathsSynctestRelayThenDirect: two peers whose direct traffic is
// dropped use the relay, stay on it while the drop lasts (slow rounds
// included), and move to the direct path once it passes and a coordinator
// probe makes both sides probe at once.
func TestPathsSynctestRelayThenDirect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		a, stopA := newBubbleNode(t, mn, pbHigh)
		defer stopA()
		b, stopB := newBubbleNode(t, mn, pbLow)
		defer stopB()
		mn.setBlock(between(a.addr(), b.addr()))
		a.p.setPeerInfo([]peerInfo{b.info(b.addr())})
		b.p.setPeerInfo([]peerInfo{a.info(a.addr())})

		until(t, time.Second, "both use the relay", func() bool {
			return a.path(b.key) == "relay "+b.alloc.relayed.String() && b.path(a.key) == "relay "+a.alloc.relayed.String()
		})
		sendData(t, a, b)
		sendData(t, b, a)
		// A handshake over the relay: b's initiation reaches a as b's.
		ep, _ := b.p.ParseEndpoint(peerEndpointString(a.key))
		if err := b.p.Send([][]byte{pbPacket(wgMsgInitiation, 1)}, ep); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if r := <-a.rx; r.typ != wgMsgInitiation || r.ep != conn.Endpoint(a.p.peers().byKey[b.key]) {
			t.Fatalf("initiation over the relay: type %d from %v", r.typ, r.ep)
		}

		// Two slow rounds (40 s apart) pass while direct stays dropped.
		time.Sleep(2*slowRoundEvery + 5*time.Second) // fake time
		synctest.Wait()
		if got := a.path(b.key); got != "relay "+b.alloc.relayed.String() {
			t.Fatalf("path while direct traffic is dropped: %s", got)
		}

		mn.setBlock(nil)
		a.p.probeAt(b.key, []netip.AddrPort{b.addr()}, nil, 100*time.Millisecond, 10)
		b.p.probeAt(a.key, []netip.AddrPort{a.addr()}, nil, 100*time.Millisecond, 11)
		took := until(t, 3*time.Second, "both go direct", func() bool {
			return a.path(b.key) == "direct "+b.addr().String() && b.path(a.key) == "direct "+a.addr().String()
		})
		t.Logf("direct %v after the probe", took)
		sendData(t, a, b)
		sendData(t, b, a)
		if a.p.pathSwitches.Load() < 1 || a.p.pongsRecv.Load() == 0 {
			t.Fatalf("a: switches %d pongs %d", a.p.pathSwitches.Load(), a.p.pongsRecv.Load())
		}
	})
}

// TestPathsSynctestBadDisco: disco packets that do not open — garbage, a
// ping sealed by an unknown key, a tampered ping, a ping naming another
// WireGuard key — are dropped, counted and never answered, and add no
// candidate.
func TestPathsSynctestBadDisco(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		a, stopA := newBubbleNode(t, mn, pbHigh)
		defer stopA()
		b, stopB := newBubbleNode(t, mn, pbLow)
		defer stopB()
		a.p.setPeerInfo([]peerInfo{b.info(b.addr())})
		evil := mn.socket()
		strangerPub, strangerPriv, _ := box.GenerateKey(rand.Reader)
		var shared [32]byte
		box.Precompute(&shared, &a.dk.pub, strangerPriv)
		ping := sealDisco(strangerPub, &shared, discoMsg{kind: discoPing, txid: newTxID(), wgKey: b.key})
		garbage := append([]byte(discoMagic), make([]byte, 100)...)
		copy(garbage[len(discoMagic):], b.dk.pub[:]) // claims to be b, does not open
		var bShared [32]byte
		bPub := b.dk.pub
		box.Precompute(&bShared, &a.dk.pub, &b.dk.priv)
		tampered := sealDisco(&bPub, &bShared, discoMsg{kind: discoPing, txid: newTxID(), wgKey: b.key})
		tampered[len(tampered)-3] ^= 0x40
		wrongKey := sealDisco(&bPub, &bShared, discoMsg{kind: discoPing, txid: newTxID(), wgKey: [32]byte{9}})
		before := a.p.discoBad.Load()
		for _, pkt := range [][]byte{ping, garbage, tampered, wrongKey, {0x41, 1, 2}} {
			evil.Send([][]byte{pkt}, newUDPEndpoint(a.addr()))
		}
		synctest.Wait()
		if got := a.p.discoBad.Load() - before; got != 4 {
			t.Fatalf("%d bad disco packets counted, want 4 (the short one is junk)", got)
		}
		time.Sleep(time.Second) // fake time: a late answer would show
		synctest.Wait()
		if len(evil.rx) != 0 {
			t.Fatalf("a answered an unauthenticated disco packet (%d datagrams)", len(evil.rx))
		}
		if a.p.peers().peerAt(evil.addr) != nil {
			t.Fatal("an unauthenticated packet added a candidate")
		}
	})
}

// TestPathsSynctestSpoofedSourceCannotMovePath: a WireGuard packet from a
// new source carrying a peer's session index is attributed to that peer
// (never handed to wireguard-go as a raw address) and the source is
// verified with a ping; without a pong (a spoofer cannot answer) the path
// stays put.
func TestPathsSynctestSpoofedSourceCannotMovePath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		a, stopA := newBubbleNode(t, mn, pbHigh)
		defer stopA()
		b, stopB := newBubbleNode(t, mn, pbLow)
		defer stopB()
		a.p.setPeerInfo([]peerInfo{b.info(b.addr())})
		b.p.setPeerInfo([]peerInfo{a.info(a.addr())})
		until(t, 3*time.Second, "a: direct to b", func() bool { return a.path(b.key) == "direct "+b.addr().String() })
		// a sends a handshake initiation with sender index 0x1234 to b.
		ep, _ := a.p.ParseEndpoint(peerEndpointString(b.key))
		init := pbPacket(wgMsgInitiation, 1)
		binary.LittleEndian.PutUint32(init[4:], 0x1234)
		if err := a.p.Send([][]byte{init}, ep); err != nil {
			t.Fatal(err)
		}
		spoof := mn.socket()
		data := pbPacket(wgMsgData, 2)
		binary.LittleEndian.PutUint32(data[4:], 0x1234) // receiver index: a's session
		synctest.Wait()
		for len(a.rx) > 0 {
			<-a.rx
		}
		spoof.Send([][]byte{data}, newUDPEndpoint(a.addr()))
		synctest.Wait()
		select {
		case r := <-a.rx:
			if r.ep != conn.Endpoint(a.p.peers().byKey[b.key]) {
				t.Fatalf("packet from a new source delivered with endpoint %v, want peer b's", r.ep)
			}
		default:
			t.Fatal("attributed packet not delivered")
		}
		if a.p.indexAttributed.Load() != 1 {
			t.Fatalf("index attributed %d, want 1", a.p.indexAttributed.Load())
		}
		// The spoofer gets a ping (verification) but cannot answer it.
		time.Sleep(time.Second) // fake time
		synctest.Wait()
		select {
		case m := <-spoof.rx:
			if !isDisco(m.b) {
				t.Fatal("the new source got something other than a verification ping")
			}
		default:
			t.Fatal("no verification ping to the new source")
		}
		time.Sleep(pathTimeout) // fake time
		synctest.Wait()
		if got := a.path(b.key); got != "direct "+b.addr().String() {
			t.Fatalf("spoofed packet moved the path to %s", got)
		}
	})
}
