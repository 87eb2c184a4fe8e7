package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Overlay is what the front-ends need from a node. *overlay.Node
// implements it; tests use a fake.
type Overlay interface {
	// Dial connects to an overlay destination: host is an agent name
	// ("search", "search.agents.internal") or a virtual IP.
	Dial(ctx context.Context, network, address string) (net.Conn, error)
	// Listen accepts TCP on the node's virtual addresses (":8080").
	Listen(network, address string) (net.Listener, error)
	// ListenPacket opens a UDP socket on the overlay (":0") that can
	// WriteTo overlay addresses (*net.UDPAddr).
	ListenPacket(network, address string) (net.PacketConn, error)
	// Resolve returns the virtual IP of a name, or an error if the node
	// does not know it. The error is used only for its message.
	Resolve(ctx context.Context, host string) (netip.Addr, error)
	// Contains reports whether ip is an overlay address (virtual IP range
	// or DNS IP).
	Contains(ip netip.Addr) bool
}

var (
	// ErrOutside means a destination is not on the overlay and the
	// front-end does not allow outside destinations (AllowOutside false).
	ErrOutside = errors.New("destination is outside the overlay")
	// ErrUnknownName means the node could not resolve a destination name.
	ErrUnknownName = errors.New("unknown overlay name")
)
