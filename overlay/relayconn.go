package overlay

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/agentnet/agentnet/relay/turnclient"
	"github.com/agentnet/agentnet/wire"
)

// The relay path. A node keeps one TURN allocation on the first relay of
// its map, reached over UDP, else TCP, else TLS (UDP blocked). Its relayed
// address is published as Node.Relayed. Peers send to it from their own
// UDP socket (so their batched I/O stays), the relay forwards to us over
// our transport, and readAlloc hands the packets to wireguard-go through
// allocReceive, an extra ReceiveFunc behind a bounded queue.
//
// We send to a peer "via relay" the same way: from our socket to the
// peer's relayed address. Only when our own UDP to the relay is blocked do
// we send through our TCP/TLS allocation instead, to where the peer's
// packets last arrived from on it (permissions are per IP, and a relay
// refuses to relay to its own addresses, so allocation-to-allocation is not
// possible). Not covered: both peers UDP-blocked; they have no path.

// allocPkt is a packet from the allocation and the endpoint it is handed
// to wireguard-go with.
type allocPkt struct {
	pkt []byte
	ep  conn.Endpoint
}

// relayPath is peerBind's part for our relay allocation: the allocation
// itself (sendPath and sendOuts send through it lock-free) and the bounded
// queue of packets from it for wireguard-go. The allocation's socket is the
// relay client's; relayLoop owns its lifetime.
type relayPath struct {
	alloc   atomic.Pointer[allocRef] // our relay allocation, nil without
	allocRx chan allocPkt            // packets from the allocation for wireguard-go; bounded

	allocRxPackets atomic.Uint64 // packets from the allocation handed to wireguard-go
	allocRxDrops   atomic.Uint64 // packets from the allocation dropped (unattributed, queue full)
	allocTxErrors  atomic.Uint64
}

// allocation is what the relay path needs of our relay allocation (a
// *turnclient.Allocation; in tests an in-memory one).
type allocation interface {
	Relay() wire.Relay
	Transport() string // udp, tcp or tls
	RelayedAddr() netip.AddrPort
	// WriteTo sends p from our relayed address to the peer at to.
	WriteTo(p []byte, to netip.AddrPort) error
	// ReadFrom blocks for the next packet a peer sent to our relayed
	// address; net.ErrClosed once the allocation is closed.
	ReadFrom(p []byte) (int, netip.AddrPort, error)
	Dropped() uint64 // packets the allocation itself dropped
}

var _ allocation = (*turnclient.Allocation)(nil)

// allocRef holds an allocation for atomic.Pointer.
type allocRef struct{ allocation }

// setAlloc installs (or, nil, removes) our allocation and re-chooses paths.
func (p *peerBind) setAlloc(a allocation) {
	var ai allocInfo
	if a == nil {
		p.alloc.Store(nil)
	} else {
		p.alloc.Store(&allocRef{a})
		ai = allocInfo{ok: true, relay: a.Relay().Name, transport: a.Transport()}
	}
	p.pathTable.setAlloc(ai)
}

// readAlloc reads a's packets until it is closed: disco is handled here,
// WireGuard packets of known peers are queued for allocReceive (dropped
// and counted when the queue is full), anything else is dropped.
func (p *peerBind) readAlloc(a allocation) {
	buf := make([]byte, 1<<16)
	for {
		n, src, err := a.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Debug("relay read ended", "relay", a.Relay().Name, "err", err)
			}
			return
		}
		b := buf[:n]
		now := p.now()
		if !isWG(b) {
			outs, _ := p.handleControl(b, src, true, now, nil)
			p.sendOuts(outs)
			continue
		}
		e := p.peers().peerAt(src)
		if e == nil {
			if p.screenWG(b) {
				continue
			}
			e = p.attribute(b, src, true, now)
		}
		if e == nil && msgType(b) == wgMsgInitiation && p.screenInit(b, src, now) {
			continue
		}
		if w, ok := p.lazyInit(e, b); ok {
			p.queueLazy([]injected{w})
			continue
		}
		var ep conn.Endpoint
		drop := false
		if e != nil {
			ep = e
			drop = p.received(e, msgType(b), now)
		} else if msgType(b) == wgMsgInitiation {
			// An initiation from a source no disco ping has named yet (the
			// peer's first packet through the relay): wireguard-go finds
			// the peer by decrypting it and answers along the peer's own
			// path (roaming is off, so this endpoint is never adopted).
			// If the sender is not a peer yet (it joined a moment ago and
			// our map has not caught up) it is remembered and delivered
			// again once the map names that address (flush), as on the
			// UDP socket.
			ep = newUDPEndpoint(src)
			p.guard.remember(src, b, now)
		} else {
			drop = true // anything else unattributable
		}
		if drop {
			p.allocRxDrops.Add(1)
			continue
		}
		select {
		case p.allocRx <- allocPkt{pkt: append([]byte(nil), b...), ep: ep}:
		default:
			p.allocRxDrops.Add(1)
		}
	}
}

// allocReceive is the ReceiveFunc of packets that came through our
// allocation. It returns net.ErrClosed once done is closed.
func (p *peerBind) allocReceive(done chan struct{}) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var in allocPkt
		select {
		case in = <-p.allocRx:
		case <-done:
			return 0, net.ErrClosed
		}
		n := 0
	fill:
		for {
			if len(in.pkt) <= len(packets[n]) {
				sizes[n] = copy(packets[n], in.pkt)
				eps[n] = in.ep
				n++
			} else {
				p.allocRxDrops.Add(1)
			}
			if n == len(packets) {
				break
			}
			select {
			case in = <-p.allocRx:
			default:
				break fill
			}
		}
		p.allocRxPackets.Add(uint64(n))
		return n, nil
	}
}

// relayLoop keeps our allocation (allocate, watch, re-allocate with
// backoff), permits peers' IPs on it, and checks our mapped address with
// STUN every stunEvery. Owner: Node (n.wg); it ends with n.ctx.
//
// With Config.PacketConn there is no allocation, only STUN through that
// conn: turnclient.Allocate dials real sockets, and a custom transport's
// addresses (vnet's in tests) must never be sent to on the real network.
func (n *Node) relayLoop() {
	defer n.wg.Done()
	canAllocate := n.cfg.PacketConn == nil
	var (
		a        *turnclient.Allocation
		dead     <-chan struct{}
		retryAt  time.Time
		attempt  int
		permits  = map[netip.Addr]bool{}
		stunNext time.Time
		mapped   []netip.AddrPort // our STUN-mapped addresses when a was allocated
	)
	defer func() {
		if a != nil {
			n.pbind.setAlloc(nil)
			a.Close()
		}
	}()
	tick := time.NewTicker(relayLoopTick)
	defer tick.Stop()
	for {
		relays := n.relays()
		n.pbind.setRelays(relays)
		if a != nil && !slices.ContainsFunc(relays, func(r wire.Relay) bool { return r.Name == a.Relay().Name }) {
			n.log.Info("relay left the map; releasing allocation", "relay", a.Relay().Name)
			n.pbind.setAlloc(nil)
			a.Close()
			a, dead = nil, nil
			n.kickPublish()
		}
		if now := n.pbind.mappedAddrs(); a != nil && len(mapped) > 0 && len(now) > 0 && !sameAddrs(mapped, now) {
			// Our NAT lost its state (rebinding, new uplink): the
			// allocation's own mapping is gone with it, and peers would
			// keep sending to a relayed address that no longer reaches us.
			n.log.Info("our mapped address moved; allocating again", "relay", a.Relay().Name, "endpoint", now)
			n.pbind.setAlloc(nil)
			a.Close()
			a, dead = nil, nil
			n.kickPublish()
		}
		if n.paths.stunNow.Swap(false) {
			stunNext = time.Time{}
		}
		now := n.now()
		if canAllocate && a == nil && len(relays) > 0 && !now.Before(retryAt) {
			a = n.allocate(relays[0])
			if a == nil {
				attempt++
				retryAt = now.Add(min(time.Duration(attempt)*allocRetryStep, allocRetryMax))
			} else {
				attempt = 0
				clear(permits)
				mapped = n.pbind.mappedAddrs()
				dead = a.Dead()
				n.pbind.setAlloc(a)
				n.wg.Add(1)
				go func(a *turnclient.Allocation) {
					defer n.wg.Done()
					n.pbind.readAlloc(a)
				}(a)
				n.kickPublish()
			}
		}
		if a != nil {
			n.permitPeers(a, permits)
		}
		if len(relays) > 0 && !now.Before(stunNext) {
			stunNext = now.Add(stunEvery)
			n.pbind.sendSTUN(relays)
		}
		if a != nil && len(mapped) == 0 {
			mapped = n.pbind.mappedAddrs() // the first STUN answer came after the allocation
		}
		select {
		case <-n.ctx.Done():
			return
		case <-dead:
			n.log.Warn("relay allocation lost; allocating again", "relay", a.Relay().Name)
			n.pbind.setAlloc(nil)
			a.Close()
			a, dead = nil, nil
			n.kickPublish()
		case <-n.paths.relayWake:
		case <-tick.C:
		}
	}
}

// allocate tries UDP, then TCP, then TLS on r.
func (n *Node) allocate(r wire.Relay) *turnclient.Allocation {
	var errs []error
	for _, tr := range []string{wire.TransportUDP, wire.TransportTCP, wire.TransportTLS} {
		if !slices.ContainsFunc(r.Addrs, func(a wire.RelayAddr) bool { return a.Transport == tr }) {
			continue
		}
		a, err := turnclient.Allocate(n.ctx, turnclient.Config{Relay: r, Transport: tr, Timeout: allocTimeout, Logger: n.log})
		if err == nil {
			n.log.Info("relay allocation", "relay", r.Name, "path", a.RelayedAddr(), "transport", tr)
			return a
		}
		if n.ctx.Err() != nil {
			return nil
		}
		errs = append(errs, err)
	}
	n.log.Warn("no relay allocation; peers behind hard NATs are unreachable until one works", "relay", r.Name, "err", errors.Join(errs...))
	return nil
}

// permitPeers lets every peer's candidate IPs send to our relayed address.
func (n *Node) permitPeers(a *turnclient.Allocation, done map[netip.Addr]bool) {
	var ips []netip.Addr
	for _, ip := range n.pbind.peerIPs() {
		if !done[ip] {
			done[ip] = true
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		return
	}
	if err := a.Permit(ips...); err != nil {
		n.log.Warn("relay refused permissions for peers", "relay", a.Relay().Name, "err", err)
	}
}

// relays returns the relays of the current map (or the test override).
func (n *Node) relays() []wire.Relay {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.testRelays != nil {
		return n.testRelays
	}
	if n.nm == nil {
		return nil
	}
	return n.nm.Relays
}

func (n *Node) kickRelay() {
	select {
	case n.paths.relayWake <- struct{}{}:
	default:
	}
}

// relayedAddrs is our relayed address, if any.
func (n *Node) relayedAddrs() []netip.AddrPort {
	if a := n.pbind.alloc.Load(); a != nil {
		return []netip.AddrPort{a.RelayedAddr()}
	}
	return nil
}

// sameAddrs reports whether a and b hold the same addresses, in any order.
func sameAddrs(a, b []netip.AddrPort) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
