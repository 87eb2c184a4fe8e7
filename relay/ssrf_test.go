package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// hostAddr stands for one of the relay host's interface addresses that is
// public; the tests only judge it, nothing is sent to it.
var hostAddr = netip.MustParseAddr("81.2.69.160")

// TestPeerRefusalTable judges peer addresses as the relay does when a
// permission or channel is asked for (port 0) and for each Send indication
// or ChannelData (with a port): by default everything but public IPv4
// unicast is refused, in every spelling.
func TestPeerRefusalTable(t *testing.T) {
	s := startRelay(t, func(c *Config) {
		c.HostAddrs = func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1"), hostAddr, netip.MustParseAddr("fe80::99%eth0")}, nil
		}
	})
	for _, tc := range []struct{ peer, reason string }{
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"10.0.0.1", ReasonPeerPrivate},
		{"172.16.0.1", ReasonPeerPrivate},
		{"172.31.255.254", ReasonPeerPrivate},
		{"192.168.1.1", ReasonPeerPrivate},
		{"100.64.0.1", ReasonPeerCGNAT},
		{"100.127.255.254", ReasonPeerCGNAT},
		{"127.0.0.1", ReasonPeerLoopback},
		{"127.0.0.53", ReasonPeerLoopback},
		{"169.254.169.254", ReasonPeerLinkLocal},
		{"224.0.0.251", ReasonPeerMulticast},
		{"239.255.255.250", ReasonPeerMulticast},
		{"255.255.255.255", ReasonPeerBroadcast},
		{"0.0.0.0", ReasonPeerUnspec},
		{"0.1.2.3", ReasonPeerUnspec},
		{"240.0.0.1", ReasonPeerReserved},
		{"192.0.0.8", ReasonPeerReserved},
		{"198.18.0.1", ReasonPeerReserved},
		{"192.0.2.1", ReasonPeerDocs},
		{"198.51.100.1", ReasonPeerDocs},
		{"203.0.113.1", ReasonPeerDocs},
		{"::ffff:10.0.0.1", ReasonPeerPrivate},
		{"::ffff:127.0.0.1", ReasonPeerLoopback},
		{"::ffff:100.64.0.1", ReasonPeerCGNAT},
		{"::ffff:169.254.169.254", ReasonPeerLinkLocal},
		{"::ffff:8.8.8.8", ""},
		{"::10.0.0.1", ReasonPeerPrivate},             // IPv4-compatible
		{"::8.8.8.8", ReasonPeerNotIPv4},              // IPv4-compatible, public: still IPv6
		{"64:ff9b::a00:1", ReasonPeerPrivate},         // NAT64 of 10.0.0.1
		{"64:ff9b::7f00:1", ReasonPeerLoopback},       // NAT64 of 127.0.0.1
		{"64:ff9b:1::a9fe:a9fe", ReasonPeerLinkLocal}, // local-use NAT64 of 169.254.169.254
		{"2002:c0a8:101::1", ReasonPeerPrivate},       // 6to4 of 192.168.1.1
		{"fc00::1", ReasonPeerPrivate},
		{"fd12:3456::1", ReasonPeerPrivate},
		{"fe80::1", ReasonPeerLinkLocal},
		{"::1", ReasonPeerLoopback},
		{"::", ReasonPeerUnspec},
		{"ff02::1", ReasonPeerMulticast},
		{"2001:db8::1", ReasonPeerDocs},
		{"2606:4700::1111", ReasonPeerNotIPv4},
		{hostAddr.String(), ReasonPeerSelf},
		{"::ffff:" + hostAddr.String(), ReasonPeerSelf},
		{"fe80::99", ReasonPeerSelf},
	} {
		ip := netip.MustParseAddr(tc.peer)
		if got := s.peerRefusal(netip.AddrPortFrom(ip, 0)); got != tc.reason {
			t.Errorf("permission for %s: refusal %q, want %q", tc.peer, got, tc.reason)
		}
		if got := s.peerRefusal(netip.AddrPortFrom(ip, 4242)); got != tc.reason {
			t.Errorf("packet to %s:4242: refusal %q, want %q", tc.peer, got, tc.reason)
		}
		// pion's PermissionHandler, as CreatePermission and ChannelBind
		// call it, with the 16-byte form pion decodes IPv4 into.
		client := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
		if got, want := s.permit(client, net.IP(ip.AsSlice()).To16()), tc.reason == ""; got != want {
			t.Errorf("permit(%s) = %v, want %v", tc.peer, got, want)
		}
	}
	if n := s.Stats().Refused[ReasonPeerPrivate]; n == 0 {
		t.Errorf("Refused[%s] = 0 after refusals", ReasonPeerPrivate)
	}
}

// TestAllowOpensRanges: Config.Allow opens a special range (a lab's
// private LAN) and the host's own addresses, never the listener ports;
// Deny still wins.
func TestAllowOpensRanges(t *testing.T) {
	s := startRelay(t, func(c *Config) {
		c.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("81.2.69.0/24")}
		c.Deny = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}
		c.HostAddrs = func() ([]netip.Addr, error) { return []netip.Addr{hostAddr}, nil }
	})
	udp := addrOf(t, s, wire.TransportUDP).Addr
	for _, tc := range []struct {
		peer   netip.AddrPort
		reason string
	}{
		{netip.MustParseAddrPort("10.1.2.3:9"), ""},
		{netip.MustParseAddrPort("[::ffff:10.1.2.3]:9"), ""},
		{netip.MustParseAddrPort("10.9.0.1:9"), ReasonPeerDenied},
		{netip.MustParseAddrPort("192.168.1.1:9"), ReasonPeerPrivate},
		{netip.AddrPortFrom(hostAddr, 9), ""},
		{netip.AddrPortFrom(hostAddr, udp.Port()), ReasonPeerSelf},
		{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 9), ReasonPeerLoopback},
	} {
		if got := s.peerRefusal(tc.peer); got != tc.reason {
			t.Errorf("%s: refusal %q, want %q", tc.peer, got, tc.reason)
		}
	}
}

// TestHostAddrsRefreshed: an address the host gains after start is
// refused within HostAddrRefresh.
func TestHostAddrsRefreshed(t *testing.T) {
	added := make(chan struct{})
	s := startRelay(t, func(c *Config) {
		c.HostAddrRefresh = 10 * time.Millisecond
		c.HostAddrs = func() ([]netip.Addr, error) {
			select {
			case <-added:
				return []netip.Addr{hostAddr}, nil
			default:
				return nil, nil
			}
		}
	})
	peer := netip.AddrPortFrom(hostAddr, 0)
	if got := s.peerRefusal(peer); got != "" {
		t.Fatalf("before the host has it: refusal %q", got)
	}
	close(added)
	deadline := time.Now().Add(5 * time.Second)
	for s.peerRefusal(peer) != ReasonPeerSelf {
		if time.Now().After(deadline) {
			t.Fatal("a new host address was not refused within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSSRFPermissionRefused: a real TURN client asking for a permission
// to the relay host's loopback (via its IPv4-mapped form too) is refused
// at permission time, counted, and nothing arrives.
func TestSSRFPermissionRefused(t *testing.T) {
	s := startRelay(t, nil)
	a := dial(t, s, wire.TransportUDP, "a")
	allocate(t, a)
	peer, got := listenPeer(t)
	for _, to := range []netip.AddrPort{peer, netip.AddrPortFrom(netip.AddrFrom16(peer.Addr().As16()), peer.Port())} {
		if _, err := a.WriteTo([]byte("ssrf"), to); err == nil {
			t.Errorf("write to %s: permission granted", to)
		}
	}
	if got() {
		t.Fatal("the relay delivered to its own loopback")
	}
	if n := s.Stats().Refused[ReasonPeerLoopback]; n < 2 {
		t.Fatalf("Refused[%s] = %d, want 2", ReasonPeerLoopback, n)
	}
}
