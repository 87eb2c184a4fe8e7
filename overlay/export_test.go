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
// nothing through would; nil lifts it. The first call puts a dropSocket
// under the node's peerBind and reopens it (wireguard-go's BindUpdate, on
// the same port).
func (n *Node) DropDirectForTest(drop func(netip.AddrPort) bool) {
	if d, ok := n.pbind.socket().(*dropSocket); ok {
		d.set(drop)
		return
	}
	d := &dropSocket{socket: n.pbind.socket()}
	d.set(drop)
	n.pbind.sock.Store(&socketRef{d})
	if err := n.dev.BindUpdate(); err != nil {
		n.log.Error("test: reopen the bind under a dropSocket", "err", err)
	}
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
