package overlay_test

import (
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
