package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/agentnet/agentnet/relay/internal/udpbatch"
	"github.com/agentnet/agentnet/relay/turncred"
)

// The relay's sockets as pion/turn sees them: each allocation's relayed
// UDP socket (relayConn, made by relayAddrs), judged, charged and counted
// on every packet, and the main UDP socket (turnSocket), whose frames to
// a client join that client's allocation's batch.

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
// Reads are batched (udpbatch.Reader). The frames pion's allocation goroutine
// then sends the client on the main UDP socket (turnSocket.WriteTo) are
// gathered in w and sent together just before the next read would block,
// so a burst from a peer crosses the relay in a few system calls.
type relayConn struct {
	*net.UDPConn
	s         *Server
	port      uint16
	r         *udpbatch.Reader     // only pion's allocation goroutine
	user      atomic.Pointer[user] // set by onAllocationCreated
	closeOnce sync.Once

	wmu       sync.Mutex // guards the fields below
	gathering bool       // from a batch read to the flush before the next read
	w         udpbatch.Writer
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
		fresh := !c.r.Buffered()
		if fresh {
			c.flush()
		}
		d, from, err := c.r.Next()
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
	if !c.gathering || !c.w.HasConn() {
		return false
	}
	if err := c.w.Add(p, to); err != nil {
		c.s.stats.clientSendErrors.Add(1)
	}
	return true
}

// flush sends the gathered frames and ends gathering.
func (c *relayConn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.gathering = false
	if err := c.w.Flush(); err != nil {
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
	udpbatch.Tune(uc)
	port := uint16(uc.LocalAddr().(*net.UDPAddr).Port)
	c := &relayConn{UDPConn: uc, s: s, port: port}
	if s.udpOut != nil {
		c.w = udpbatch.NewWriter(s.udpOut)
	}
	c.r = udpbatch.NewReader(udpbatch.New(uc, true), func() { s.stats.truncated.Add(1) })
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
	_, name, err := turncred.ParseUsername(username)
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
