package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/agentnet/agentnet/wire"
)

// ErrUnknownName means a name is not in this node's network map.
var ErrUnknownName = errors.New("unknown agent name")

// Self returns this node as the coordinator describes it.
func (n *Node) Self() wire.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nm.Self
}

// Map returns the network map in force (do not modify it).
func (n *Node) Map() *wire.Map {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nm
}

// LookupNode finds a node (self or peer) by bare name, name.domain, or
// virtual IP.
func (n *Node) LookupNode(host string) (wire.Node, error) {
	n.mu.Lock()
	m := n.nm
	n.mu.Unlock()
	if ip, err := netip.ParseAddr(host); err == nil {
		for _, p := range append([]wire.Node{m.Self}, m.Peers...) {
			if p.IPv4 == ip || p.IPv6 == ip {
				return p, nil
			}
		}
		return wire.Node{}, fmt.Errorf("%w: no node has address %s", ErrUnknownName, ip)
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	name = strings.TrimSuffix(name, "."+m.Domain)
	for _, p := range append([]wire.Node{m.Self}, m.Peers...) {
		if p.Name == name {
			return p, nil
		}
	}
	known := make([]string, 0, len(m.Peers))
	for _, p := range m.Peers {
		known = append(known, p.Name)
	}
	sort.Strings(known)
	return wire.Node{}, fmt.Errorf("%w %q: not in this node's network map (peers: %s)", ErrUnknownName, host, strings.Join(known, ", "))
}

// WaitPeer blocks until the network map lists the named peer (bare name or
// name.domain) and returns it, or until ctx ends. A node learns of a peer
// from the coordinator once that peer is up, so an agent that starts beside
// the peers it needs waits here before its first Dial.
func (n *Node) WaitPeer(ctx context.Context, name string) (wire.Node, error) {
	for {
		n.mu.Lock()
		wait := n.mapWait
		n.mu.Unlock()
		if p, err := n.LookupNode(name); err == nil {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return wire.Node{}, fmt.Errorf("overlay: waiting for peer %q: %w", name, ctx.Err())
		case <-wait:
		}
	}
}

// resolve turns "name" or "ip" into a virtual IP of the right family.
func (n *Node) resolve(network, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	p, err := n.LookupNode(host)
	if err != nil {
		return netip.Addr{}, err
	}
	if strings.HasSuffix(network, "6") {
		return p.IPv6, nil
	}
	return p.IPv4, nil
}

// Dial connects over the overlay. address is "name:port",
// "name.agents.internal:port" or "virtual-ip:port"; network is tcp, tcp4,
// tcp6, udp, udp4 or udp6.
func (n *Node) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("overlay: dial %q: %w", address, err)
	}
	ip, err := n.resolve(network, host)
	if err != nil {
		return nil, fmt.Errorf("overlay: dial %s: %w", address, err)
	}
	return n.plane.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
}

// Listen accepts TCP connections on the node's virtual addresses.
// address is ":port" (all of them) or "virtual-ip:port".
func (n *Node) Listen(network, address string) (net.Listener, error) {
	ap, err := parseListenAddr(address)
	if err != nil {
		return nil, fmt.Errorf("overlay: listen %q: %w", address, err)
	}
	if !strings.HasPrefix(network, "tcp") {
		return nil, fmt.Errorf("overlay: listen: network %q not supported (use tcp, or ListenPacket for udp)", network)
	}
	return n.plane.ListenTCP(ap)
}

// ListenPacket is Listen for UDP.
func (n *Node) ListenPacket(network, address string) (net.PacketConn, error) {
	ap, err := parseListenAddr(address)
	if err != nil {
		return nil, fmt.Errorf("overlay: listen %q: %w", address, err)
	}
	return n.plane.ListenUDP(ap)
}

func parseListenAddr(address string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.Addr{}, uint16(p)), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address must be an IP: %w", err)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// Resolver returns a resolver that sends real DNS queries through the
// overlay to the built-in DNS server at wire.DefaultDNSIP:53.
func (n *Node) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			m := n.Map()
			return n.plane.DialContext(ctx, network, netip.AddrPortFrom(m.DNSIP, 53).String())
		},
	}
}

// Resolve returns the virtual IPv4 of an agent name (or parses an IP).
func (n *Node) Resolve(_ context.Context, host string) (netip.Addr, error) {
	return n.resolve("tcp4", host)
}

// Contains reports whether ip belongs to the overlay: a virtual address or
// the DNS IP.
func (n *Node) Contains(ip netip.Addr) bool {
	m := n.Map()
	ip = ip.Unmap()
	return ip == m.DNSIP || m.Prefix4.Contains(ip) || m.Prefix6.Contains(ip)
}
