package relay

import (
	"errors"
	"net"
	"net/netip"

	"github.com/agentnet/agentnet/relay/turncred"
)

// What the relay refuses and why: the peers it never relays to, so that it
// cannot serve as an open proxy into its own host or network (judged per
// IP for permissions, RFC 8656 §9, and per packet), and the allocation
// quota per node.

// Refusal reasons, the keys of Stats.Refused and the "reason" log field.
const (
	ReasonBadUsername    = "bad_username"     // username is not "<expiry>:<node>"
	ReasonExpired        = "expired"          // credential past its expiry
	ReasonBadPassword    = "bad_password"     // message integrity did not verify
	ReasonQuota          = "allocation_quota" // MaxAllocationsPerUser reached
	ReasonBandwidth      = "bandwidth"        // packet over BandwidthPerUser, dropped
	ReasonTCPConns       = "tcp_conns"        // too many TCP/TLS connections
	ReasonPeerLoopback   = "peer_loopback"
	ReasonPeerLinkLocal  = "peer_link_local"
	ReasonPeerUnspec     = "peer_unspecified"
	ReasonPeerMulticast  = "peer_multicast"
	ReasonPeerBroadcast  = "peer_broadcast"
	ReasonPeerNotIPv4    = "peer_not_ipv4" // allocations are IPv4 (pion/turn allocates udp4)
	ReasonPeerDenied     = "peer_denied"   // in Config.Deny
	ReasonPeerSelf       = "peer_self"     // one of the relay's own service addresses
	ReasonPeerBadAddress = "peer_bad_address"
)

// errPeerRefused is what a relay socket's WriteTo returns for a refused
// destination; pion logs it at debug level and the packet is gone.
var errPeerRefused = errors.New("relay: peer address refused by policy")

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// peerRefusal returns why the relay must not send to peer, or "". With
// port 0 only the address is judged (TURN permissions are per IP, RFC 8656
// §9); every packet is then judged with its port in relayConn.WriteTo.
//
// The relay never relays to loopback (unless AllowLoopback), link-local,
// unspecified, multicast or broadcast addresses, nor to Deny prefixes. To
// its own addresses it relays only to ports of its live allocations (two
// nodes that are both relayed through it), never to its listeners or any
// other service on the host; with AllowLoopback, loopback peers other than
// its own listener ports are allowed (single-machine demos and tests).
func (s *Server) peerRefusal(peer netip.AddrPort) string {
	ip := peer.Addr().Unmap()
	switch {
	case !ip.IsValid():
		return ReasonPeerBadAddress
	case !ip.Is4():
		return ReasonPeerNotIPv4
	case ip.IsUnspecified():
		return ReasonPeerUnspec
	case ip.IsMulticast():
		return ReasonPeerMulticast
	case ip == broadcast4:
		return ReasonPeerBroadcast
	case ip.IsLinkLocalUnicast():
		return ReasonPeerLinkLocal
	case ip.IsLoopback() && !s.cfg.AllowLoopback:
		return ReasonPeerLoopback
	}
	for _, p := range s.cfg.Deny {
		if p.Contains(ip) {
			return ReasonPeerDenied
		}
	}
	if !ip.IsLoopback() && !s.ownIPs[ip] {
		return ""
	}
	port := peer.Port()
	if port == 0 {
		return ""
	}
	if s.listenPorts[port] {
		return ReasonPeerSelf
	}
	if ip.IsLoopback() {
		return "" // AllowLoopback
	}
	s.mu.Lock()
	_, alloc := s.allocs[port]
	s.mu.Unlock()
	if !alloc {
		return ReasonPeerSelf
	}
	return ""
}

// permit is pion's PermissionHandler: it judges CreatePermission and
// ChannelBind requests by the peer's IP.
func (s *Server) permit(client net.Addr, peerIP net.IP) bool {
	ip, ok := netip.AddrFromSlice(peerIP)
	if !ok {
		s.refuse(ReasonPeerBadAddress, "endpoint", client.String())
		return false
	}
	if reason := s.peerRefusal(netip.AddrPortFrom(ip.Unmap(), 0)); reason != "" {
		s.refuse(reason, "endpoint", client.String(), "peer", ip.Unmap().String())
		return false
	}
	return true
}

// quota is pion's QuotaHandler: at most MaxAllocationsPerUser live
// allocations per node (all transports together). Two allocations racing
// on separate TCP connections may both pass; the quota then overshoots by
// at most the number of racing connections.
func (s *Server) quota(username, _ string, src net.Addr) bool {
	_, name, err := turncred.ParseUsername(username)
	if err != nil {
		return false
	}
	s.mu.Lock()
	n := 0
	if u := s.users[name]; u != nil {
		n = u.allocs
	}
	s.mu.Unlock()
	if n >= s.cfg.MaxAllocationsPerUser {
		s.refuse(ReasonQuota, "node", name, "endpoint", src.String())
		return false
	}
	return true
}
