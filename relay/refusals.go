package relay

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/agentnet/agentnet/relay/turncred"
)

// What the relay refuses and why: the peers it never relays to, so that it
// cannot serve as an open proxy (SSRF) into its own host or the networks
// behind it (judged per IP when a permission or channel is asked for, RFC
// 8656 §9 and §12, and again per packet for Send indications and
// ChannelData), the credentials it refuses, and the allocation quota per
// node.

// Refusal reasons, the keys of Stats.Refused and the "reason" log field.
const (
	ReasonBadUsername    = "bad_username"     // username is not "<expiry>:<node>"
	ReasonExpired        = "expired"          // credential past its expiry
	ReasonTooLong        = "expiry_too_far"   // credential expires more than MaxCredentialTTL ahead
	ReasonBadPassword    = "bad_password"     // message integrity did not verify
	ReasonAuthThrottled  = "auth_throttled"   // source in back-off after repeated bad passwords
	ReasonQuota          = "allocation_quota" // MaxAllocationsPerUser reached
	ReasonBandwidth      = "bandwidth"        // packet over BandwidthPerUser, dropped
	ReasonTCPConns       = "tcp_conns"        // too many TCP/TLS connections
	ReasonSlowClient     = "slow_client"      // TCP/TLS client not reading; dropped
	ReasonPeerLoopback   = "peer_loopback"
	ReasonPeerLinkLocal  = "peer_link_local"
	ReasonPeerUnspec     = "peer_unspecified"
	ReasonPeerMulticast  = "peer_multicast"
	ReasonPeerBroadcast  = "peer_broadcast"
	ReasonPeerPrivate    = "peer_private"       // RFC 1918, RFC 4193 (ULA), site-local
	ReasonPeerCGNAT      = "peer_cgnat"         // RFC 6598 shared address space
	ReasonPeerReserved   = "peer_reserved"      // reserved, benchmarking, protocol assignments
	ReasonPeerDocs       = "peer_documentation" // RFC 5737, RFC 3849
	ReasonPeerNotIPv4    = "peer_not_ipv4"      // allocations are IPv4 (pion/turn allocates udp4)
	ReasonPeerDenied     = "peer_denied"        // in Config.Deny
	ReasonPeerSelf       = "peer_self"          // one of the relay host's own addresses
	ReasonPeerBadAddress = "peer_bad_address"
)

// errPeerRefused is what a relay socket's WriteTo returns for a refused
// destination; pion logs it at debug level and the packet is gone.
var errPeerRefused = errors.New("relay: peer address refused by policy")

// special is a special-purpose range (IANA IPv4 and IPv6 Special-Purpose
// Address Registries, RFC 6890) the relay refuses unless Config.Allow
// opens it.
type special struct {
	p      netip.Prefix
	reason string
}

// specialPrefixes lists the ranges refused by default. It is a read-only
// table.
var specialPrefixes = [...]special{
	{netip.MustParsePrefix("0.0.0.0/8"), ReasonPeerUnspec},         // "this network", RFC 791
	{netip.MustParsePrefix("10.0.0.0/8"), ReasonPeerPrivate},       // RFC 1918
	{netip.MustParsePrefix("100.64.0.0/10"), ReasonPeerCGNAT},      // RFC 6598
	{netip.MustParsePrefix("127.0.0.0/8"), ReasonPeerLoopback},     // RFC 1122
	{netip.MustParsePrefix("169.254.0.0/16"), ReasonPeerLinkLocal}, // RFC 3927
	{netip.MustParsePrefix("172.16.0.0/12"), ReasonPeerPrivate},    // RFC 1918
	{netip.MustParsePrefix("192.0.0.0/24"), ReasonPeerReserved},    // RFC 6890 protocol assignments
	{netip.MustParsePrefix("192.0.2.0/24"), ReasonPeerDocs},        // RFC 5737 TEST-NET-1
	{netip.MustParsePrefix("192.88.99.0/24"), ReasonPeerReserved},  // RFC 7526, former 6to4 anycast
	{netip.MustParsePrefix("192.168.0.0/16"), ReasonPeerPrivate},   // RFC 1918
	{netip.MustParsePrefix("198.18.0.0/15"), ReasonPeerReserved},   // RFC 2544 benchmarking
	{netip.MustParsePrefix("198.51.100.0/24"), ReasonPeerDocs},     // RFC 5737 TEST-NET-2
	{netip.MustParsePrefix("203.0.113.0/24"), ReasonPeerDocs},      // RFC 5737 TEST-NET-3
	{netip.MustParsePrefix("224.0.0.0/4"), ReasonPeerMulticast},    // RFC 5771
	{netip.MustParsePrefix("255.255.255.255/32"), ReasonPeerBroadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), ReasonPeerReserved}, // RFC 1112 §4
	{netip.MustParsePrefix("::/128"), ReasonPeerUnspec},
	{netip.MustParsePrefix("::1/128"), ReasonPeerLoopback},
	{netip.MustParsePrefix("fe80::/10"), ReasonPeerLinkLocal},
	{netip.MustParsePrefix("fec0::/10"), ReasonPeerPrivate}, // RFC 3879, deprecated site-local
	{netip.MustParsePrefix("fc00::/7"), ReasonPeerPrivate},  // RFC 4193 ULA
	{netip.MustParsePrefix("ff00::/8"), ReasonPeerMulticast},
	{netip.MustParsePrefix("2001:db8::/32"), ReasonPeerDocs}, // RFC 3849
	{netip.MustParsePrefix("100::/64"), ReasonPeerReserved},  // RFC 6666 discard-only
}

// specialReason returns why ip (IPv4, or IPv6 not holding an IPv4) is in a
// special-purpose range, or "".
func specialReason(ip netip.Addr) string {
	for _, sp := range specialPrefixes {
		if sp.p.Contains(ip) {
			return sp.reason
		}
	}
	return ""
}

// embeddedIPv4 returns the IPv4 address an IPv6 address stands for:
// IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96, RFC 4291 §2.5.5.1),
// NAT64 (64:ff9b::/96, RFC 6052; 64:ff9b:1::/48, RFC 8215) and 6to4
// (2002::/16, RFC 3056). A relay or a NAT64 on the path could deliver to
// it, so it is judged as that IPv4 address.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	if ip.Is4In6() {
		return ip.Unmap(), true
	}
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	last := netip.AddrFrom4([4]byte(b[12:16]))
	switch {
	case b == [16]byte{} || ip == netip.IPv6Loopback():
		return netip.Addr{}, false
	case [12]byte(b[:12]) == [12]byte{}:
		return last, true // IPv4-compatible
	case netip.MustParsePrefix("64:ff9b::/96").Contains(ip), netip.MustParsePrefix("64:ff9b:1::/48").Contains(ip):
		return last, true
	case b[0] == 0x20 && b[1] == 0x02:
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// peerRefusal returns why the relay must not send to peer, or "". With
// port 0 only the address is judged (TURN permissions are per IP, RFC 8656
// §9); every packet is then judged with its port in relayConn.WriteTo.
//
// In order: Config.Deny refuses; the relay's listener ports are refused;
// the relay host's own addresses are refused unless Config.Allow (or
// AllowLoopback) opens them, except PublicIP, where other allocations'
// relayed addresses live (two nodes both relayed here) and where data
// goes only to ports of live allocations; an address Allow opens is
// allowed; special-purpose ranges
// (private, CGNAT, ULA, loopback, link-local, multicast, broadcast,
// reserved, documentation, and their IPv4-mapped, -compatible, NAT64 and
// 6to4 forms) are refused; anything not IPv4 is refused.
func (s *Server) peerRefusal(peer netip.AddrPort) string {
	ip := peer.Addr()
	if !ip.IsValid() {
		return ReasonPeerBadAddress
	}
	ip = ip.WithZone("")
	if v4, ok := embeddedIPv4(ip); ok {
		if ip.Is4In6() {
			ip = v4
		} else {
			if r := s.peerRefusal(netip.AddrPortFrom(v4, peer.Port())); r != "" {
				return r
			}
			return ReasonPeerNotIPv4
		}
	}
	for _, p := range s.cfg.Deny {
		if p.Contains(ip) {
			return ReasonPeerDenied
		}
	}
	port := peer.Port()
	allowed := s.allowed(ip)
	if s.hostAddrs.Load().has(ip) || ip == s.publicIP {
		switch {
		case port != 0 && s.listenPorts[port]:
			return ReasonPeerSelf
		case allowed:
			return ""
		case ip != s.publicIP:
			return ReasonPeerSelf
		}
		if r := specialReason(ip); r != "" {
			return r // a PublicIP in a special range needs Allow
		}
		if port == 0 {
			return "" // PublicIP: judged per packet below
		}
		s.mu.Lock()
		_, alloc := s.allocs[port]
		s.mu.Unlock()
		if !alloc {
			return ReasonPeerSelf
		}
		return ""
	}
	if allowed {
		return ""
	}
	if r := specialReason(ip); r != "" {
		return r
	}
	if !ip.Is4() {
		return ReasonPeerNotIPv4
	}
	return ""
}

// allowed reports whether Config.Allow or AllowLoopback opens ip.
func (s *Server) allowed(ip netip.Addr) bool {
	if s.cfg.AllowLoopback && ip.IsLoopback() {
		return true
	}
	for _, p := range s.cfg.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// addrSet is a set of the relay host's addresses, replaced whole on each
// refresh and read lock-free.
type addrSet map[netip.Addr]struct{}

func (a *addrSet) has(ip netip.Addr) bool {
	if a == nil {
		return false
	}
	_, ok := (*a)[ip]
	return ok
}

// refreshHostAddrs enumerates the host's interface addresses (and the
// relay's own configured ones) again: an address added after start, by
// DHCP or a new interface, is refused within HostAddrRefresh.
func (s *Server) refreshHostAddrs() {
	set := addrSet{s.publicIP: {}}
	for _, ip := range s.fixedAddrs {
		set[ip] = struct{}{}
	}
	ips, err := s.cfg.HostAddrs()
	if err != nil {
		s.log.Warn("relay: list host addresses", "relay", s.cfg.Name, "err", err)
		if old := s.hostAddrs.Load(); old != nil {
			return // keep the last good list
		}
	}
	for _, ip := range ips {
		ip = ip.Unmap().WithZone("")
		if !ip.IsUnspecified() {
			set[ip] = struct{}{}
		}
	}
	s.hostAddrs.Store(&set)
}

// watchHostAddrs refreshes the host's addresses every HostAddrRefresh
// until Close. Owner: Server (s.wg).
func (s *Server) watchHostAddrs() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.HostAddrRefresh)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.refreshHostAddrs()
		}
	}
}

// interfaceAddrs is Config.HostAddrs's default: every address of every
// interface of the host.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, err
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
