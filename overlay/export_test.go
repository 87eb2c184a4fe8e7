package overlay

import (
	"net/netip"
	"strings"
	"sync"

	"github.com/agentnet/agentnet/wire"
)

// DeliverMapForTest hands a map to the node as if the coordinator's stream
// had sent it.
func (n *Node) DeliverMapForTest(s *wire.Signed) { n.onSignedMap(&signedMap{Signed: *s}) }

// SetRelaysForTest makes the node use rs instead of its map's relays.
func (n *Node) SetRelaysForTest(rs []wire.Relay) {
	n.mu.Lock()
	n.testRelays = rs
	n.mu.Unlock()
	n.kickRelay()
}

// DropDirectForTest makes the node drop direct traffic (disco and
// WireGuard) to and from addresses drop matches, as a NAT that lets
// nothing through would; nil lifts it.
func (n *Node) DropDirectForTest(drop func(netip.AddrPort) bool) {
	if drop == nil {
		n.pbind.testDrop.Store(nil)
		return
	}
	n.pbind.testDrop.Store(&drop)
}

// DeliverProbeForTest hands the node a MsgProbe as if the coordinator's
// stream had sent it.
func (n *Node) DeliverProbeForTest(p *wire.Probe) { n.onProbe(p) }

// ConfiguredPeersForTest is the number of peers configured in the node's
// wireguard-go device (lazywg.go), read through UAPI.
func (n *Node) ConfiguredPeersForTest() int {
	s, err := n.dev.IpcGet()
	if err != nil {
		return -1
	}
	return strings.Count(s, "public_key=")
}

// HoldCacheWriteForTest makes the node's next write of its map cache (the
// I/O step of a map application, node.go) close entered and wait for
// release before writing. release may be called more than once.
func (n *Node) HoldCacheWriteForTest() (entered <-chan struct{}, release func()) {
	in, out := make(chan struct{}), make(chan struct{})
	held := false // writeCache runs under mapMu: no other guard needed
	n.mapMu.Lock()
	write := n.writeCache
	n.writeCache = func(dir string, s *signedMap) error {
		if !held {
			held = true
			close(in)
			<-out
		}
		return write(dir, s)
	}
	n.mapMu.Unlock()
	return in, sync.OnceFunc(func() { close(out) })
}
