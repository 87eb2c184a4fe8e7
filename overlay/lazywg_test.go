package overlay_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
)

// TestLazyPeers: map peers are not configured in wireguard-go until there
// is traffic; the first connection configures the peer on both ends (the
// dialer on its first packet, the listener on the dialer's initiation) and
// completes without a handshake retry (5 s), whichever side's key wins the
// initiation tie-break.
func TestLazyPeers(t *testing.T) {
	net4 := testnet.New(t)
	nodes := []*overlay.Node{net4.StartNode("alpha"), net4.StartNode("bravo"), net4.StartNode("charlie"), net4.StartNode("delta")}
	testnet.WaitPeers(t, nodes...)
	for _, n := range nodes {
		if got := n.ConfiguredPeersForTest(); got != 0 {
			t.Fatalf("%s: %d wireguard peers configured before any traffic, want 0", n.Self().Name, got)
		}
		ln, err := n.Listen("tcp", ":7000")
		if err != nil {
			t.Fatal(err)
		}
		echoServer(t, ln)
	}
	// The dialer's key is larger in one pair (it sends a persistent
	// keepalive and wins collisions) and smaller in the other.
	larger := func(x, y *overlay.Node) bool {
		kx, _ := wire.ParseWGKey(x.Self().WGKey)
		ky, _ := wire.ParseWGKey(y.Self().WGKey)
		return string(kx[:]) > string(ky[:])
	}
	pair := func(x, y *overlay.Node, dialerWins bool) [2]*overlay.Node {
		if larger(x, y) != dialerWins {
			x, y = y, x
		}
		return [2]*overlay.Node{x, y}
	}
	for _, p := range [][2]*overlay.Node{pair(nodes[0], nodes[1], true), pair(nodes[2], nodes[3], false)} {
		from, to := p[0], p[1]
		start := time.Now()
		echoOnce(t, from, to.Self().Name+":7000", "first contact")
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s→%s: first exchange took %v: a handshake was retried", from.Self().Name, to.Self().Name, d)
		}
		for _, n := range p {
			if got := n.ConfiguredPeersForTest(); got != 1 {
				t.Errorf("%s: %d wireguard peers configured after talking to one, want 1", n.Self().Name, got)
			}
		}
	}
	// The other direction of an established pair needs nothing new.
	echoOnce(t, nodes[1], nodes[0].Self().Name+":7000", "back")
}

// TestLazyPeerWhileMapCacheWrites: a map application does its I/O (UAPI,
// DNS, the fsync'd cache write) outside the node's mu, so the first packet
// to a lazy peer configures it while a map application is held in its
// cache write. (When mu was held across the write, the echo below waited
// for it: the deadline only turns that into a failure instead of a hang.)
func TestLazyPeerWhileMapCacheWrites(t *testing.T) {
	net3 := testnet.New(t)
	a, b := net3.StartNode("alpha"), net3.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	to := netip.AddrPortFrom(b.Self().IPv4, 7000).String()

	entered, release := a.HoldCacheWriteForTest()
	defer release()
	c := net3.StartNode("charlie") // a new map for alpha, held in its cache write
	<-entered
	done := make(chan error, 1)
	go func() { done <- echo(a, to, "while the cache is written") }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first packet to a lazy peer waited for a map application's cache write")
	}
	if got := a.ConfiguredPeersForTest(); got != 1 {
		t.Errorf("alpha: %d wireguard peers configured after talking to bravo, want 1", got)
	}
	release()
	testnet.WaitPeers(t, a, b, c)
}

// echo is echoOnce returning its error, for use off the test goroutine.
func echo(from *overlay.Node, addr, msg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write to %s: %w", addr, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		return fmt.Errorf("echo from %s: %q, %v", addr, buf, err)
	}
	return nil
}
