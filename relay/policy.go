package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"
)

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

// user is the per-node state shared by all of a node's allocations.
type user struct {
	name   string
	allocs int           // guarded by Server.mu
	lim    *rate.Limiter // nil: unlimited; safe for concurrent use
}

// relayConn is one allocation's relayed UDP socket. pion reads it in the
// allocation's goroutine and writes it from the listener's read loop; both
// pass through here so that every packet is judged by peerRefusal, charged
// to the node's bandwidth limit and counted.
//
// Reads are batched (batchReader). The frames pion's allocation goroutine
// then sends the client on the main UDP socket (turnSocket.WriteTo) are
// gathered in w and sent together just before the next read would block,
// so a burst from a peer crosses the relay in a few system calls.
type relayConn struct {
	*net.UDPConn
	s         *Server
	port      uint16
	r         *batchReader         // only pion's allocation goroutine
	user      atomic.Pointer[user] // set by onAllocationCreated
	closeOnce sync.Once

	wmu       sync.Mutex // guards the fields below
	gathering bool       // from a batch read to the flush before the next read
	w         batchWriter
	client    netip.AddrPort // the client's address on UDP (s.clients); zero on TCP/TLS
}

// WriteTo sends a client's packet to a peer.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("relay: peer address %v is not UDP", addr)
	}
	peer := ua.AddrPort()
	if reason := c.s.peerRefusal(peer); reason != "" {
		c.s.refuse(reason, "peer", peer.String(), "relay", c.port)
		return 0, errPeerRefused
	}
	if u := c.user.Load(); u != nil && u.lim != nil && !u.lim.AllowN(c.s.now(), len(p)) {
		c.s.stats.bandwidthDrops.Add(1)
		return len(p), nil // dropped, like a full link
	}
	n, err := c.UDPConn.WriteToUDPAddrPort(p, peer)
	c.s.stats.bytesToPeers.Add(uint64(n))
	return n, err
}

// ReadFrom returns the next packet from a peer within the node's bandwidth
// limit; packets over it are dropped and counted. Before it would block
// on the socket it sends the frames gathered for the client.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		fresh := !c.r.buffered()
		if fresh {
			c.flush()
		}
		d, from, err := c.r.next()
		if err != nil {
			return 0, nil, err
		}
		if fresh {
			c.wmu.Lock()
			c.gathering = true
			c.wmu.Unlock()
		}
		if u := c.user.Load(); u != nil && u.lim != nil && !u.lim.AllowN(c.s.now(), len(d)) {
			c.s.stats.bandwidthDrops.Add(1)
			continue
		}
		c.s.stats.bytesFromPeers.Add(uint64(len(d)))
		return copy(p, d), from, nil
	}
}

// queue adds a frame for the client to the batch being gathered; false
// means there is none (send it now).
func (c *relayConn) queue(p []byte, to *net.UDPAddr) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.gathering || c.w.b == nil {
		return false
	}
	if err := c.w.add(p, to); err != nil {
		c.s.stats.clientSendErrors.Add(1)
	}
	return true
}

// flush sends the gathered frames and ends gathering.
func (c *relayConn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.gathering = false
	if err := c.w.flush(); err != nil {
		c.s.stats.clientSendErrors.Add(1)
	}
}

// Close closes the socket and releases the allocation's quota slot.
func (c *relayConn) Close() error {
	err := c.UDPConn.Close()
	c.closeOnce.Do(func() {
		s := c.s
		c.wmu.Lock()
		client := c.client
		c.wmu.Unlock()
		if client.IsValid() {
			s.clientsMu.Lock()
			if s.clients[client] == c {
				delete(s.clients, client)
			}
			s.clientsMu.Unlock()
		}
		s.mu.Lock()
		delete(s.allocs, c.port)
		if u := c.user.Load(); u != nil {
			s.stats.allocations.Add(-1)
			if u.allocs--; u.allocs <= 0 {
				delete(s.users, u.name)
			}
		}
		s.mu.Unlock()
		s.wg.Done()
	})
	return err
}

// relayAddrs is the turn.RelayAddressGenerator of every listener: it opens
// the relayed socket on the relay's bind address and names it by PublicIP.
type relayAddrs struct{ s *Server }

func (g relayAddrs) Validate() error { return nil }

func (g relayAddrs) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	s := g.s
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: s.relayBindIP.AsSlice(), Port: requestedPort})
	if err != nil {
		return nil, nil, fmt.Errorf("relay: open relayed socket: %w", err)
	}
	tuneUDP(uc)
	port := uint16(uc.LocalAddr().(*net.UDPAddr).Port)
	c := &relayConn{UDPConn: uc, s: s, port: port, w: batchWriter{b: s.udpOut}}
	c.r = newBatchReader(newUDPBatch(uc, true), func() { s.stats.truncated.Add(1) })
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		uc.Close()
		return nil, nil, net.ErrClosed
	}
	s.allocs[port] = c
	s.wg.Add(1)
	s.mu.Unlock()
	return c, &net.UDPAddr{IP: s.publicIP.AsSlice(), Port: int(port)}, nil
}

func (g relayAddrs) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errors.New("relay: TCP allocations (RFC 6062) are not supported")
}

// onAllocationCreated ties a new allocation's socket to its node, for the
// quota and the bandwidth limit.
func (s *Server) onAllocationCreated(src, _ net.Addr, proto, username, _ string, relayAddr net.Addr, _ int) {
	ua, ok := relayAddr.(*net.UDPAddr)
	if !ok {
		return
	}
	_, name, err := parseUsername(username)
	if err != nil {
		return // authenticated, so cannot happen
	}
	s.mu.Lock()
	c := s.allocs[uint16(ua.Port)]
	u := s.users[name]
	if u == nil {
		u = &user{name: name}
		if s.bandwidth > 0 {
			u.lim = rate.NewLimiter(rate.Limit(s.bandwidth), int(max(s.bandwidth, 64<<10)))
		}
		s.users[name] = u
	}
	if c != nil && c.user.Load() == nil {
		u.allocs++
		c.user.Store(u)
		s.stats.allocations.Add(1)
	}
	s.mu.Unlock()
	if src, ok := src.(*net.UDPAddr); ok && c != nil && proto == "UDP" {
		ap := src.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		c.wmu.Lock()
		c.client = ap
		c.wmu.Unlock()
		s.clientsMu.Lock()
		s.clients[ap] = c
		s.clientsMu.Unlock()
	}
	s.stats.allocationsTotal.Add(1)
	s.log.Debug("relay: allocation", "node", name, "endpoint", src.String(), "path", proto, "relay", ua.Port)
}

// quota is pion's QuotaHandler: at most MaxAllocationsPerUser live
// allocations per node (all transports together). Two allocations racing
// on separate TCP connections may both pass; the quota then overshoots by
// at most the number of racing connections.
func (s *Server) quota(username, _ string, src net.Addr) bool {
	_, name, err := parseUsername(username)
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

// turnSocket is the main UDP socket as pion sees it. The frames pion's
// allocation goroutine relays to its client (ChannelData, RFC 8656 §12.4,
// and Data indications, §11.4) join that allocation's gathered batch
// (relayConn.queue); everything else is written at once.
type turnSocket struct {
	*net.UDPConn
	s *Server
}

func (t turnSocket) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok && isRelayedFrame(p) {
		if c := t.s.clientConn(ua.AddrPort()); c != nil && c.queue(p, ua) {
			return len(p), nil
		}
	}
	return t.UDPConn.WriteTo(p, addr)
}

// isRelayedFrame reports whether p is a ChannelData message (channel
// numbers 0x4000-0x7FFF: first bits 01) or a Data indication (STUN type
// 0x0017).
func isRelayedFrame(p []byte) bool {
	return len(p) >= 4 && (p[0]&0xC0 == 0x40 || len(p) >= 20 && p[0] == 0x00 && p[1] == 0x17)
}

// clientConn returns the allocation of the UDP client at ap, if any.
func (s *Server) clientConn(ap netip.AddrPort) *relayConn {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	s.clientsMu.RLock()
	c := s.clients[ap]
	s.clientsMu.RUnlock()
	return c
}
