package overlay

import (
	"net/netip"
	"sync/atomic"
)

// Lazy WireGuard peers. wireguard-go gives every configured peer its own
// queues (two of 1,024 slots, one of 128), three goroutines, timers and
// handshake state, and a peer with a persistent keepalive also a 64 KiB
// message buffer staged until a handshake that an offline peer never
// answers: with 1,000 peers in the map that was ~55 MiB of an idle node's
// RSS. So, as Tailscale does, a map peer is configured in wireguard-go
// (Node.active) only once there is traffic for it:
//
//   - outbound: the first packet to one of its addresses (filterDevice.Read,
//     on wireguard-go's TUN reader, configures it synchronously before
//     handing the packet on, so nothing is lost);
//   - inbound: a handshake initiation from it. peerBind takes it out of the
//     batch, the node's activator goroutine configures the peer and
//     delivers the initiation again through peerBind's inject receive
//     function (the one that redelivers strangers' initiations), where the
//     usual tie-break applies. The peer is known by its path, or, for a
//     source no path names yet, by the static key in the initiation
//     (initiation.go). Only initiations matter: responses and data need a
//     handshake, and that needs the peer configured on this side.
//
// Inbound configuration is asynchronous because it takes wireguard-go's
// configuration lock, which must never be waited for on its receive
// goroutines (a bind update holds it while waiting for them to exit).
//
// Once configured, a peer stays until it leaves the map (or its key
// changes: a rotated key inherits its node's configuration, see
// Node.activeFor).

// lazyWG is what the data path asks "is this peer configured?". Reads are
// lock-free: the index is swapped whole by the node under its mu.
type lazyWG struct {
	// activate configures a map peer in wireguard-go (Node.activatePeer).
	// Set before use. It takes Node.mu and wireguard-go's configuration
	// lock: never call it holding a peerBind lock or from a receive function.
	activate func(key [32]byte)

	idx    atomic.Pointer[lazyIndex]
	reader atomic.Pointer[initReader] // our current private key's (rotate.go)

	activations atomic.Uint64 // peers configured on demand
}

// lazyIndex maps every map peer's key and addresses to its state.
type lazyIndex struct {
	byKey map[[32]byte]*lazyPeer
	byIP  map[netip.Addr]*lazyPeer
	// byCand maps every candidate a map peer published (address and
	// port: another port of the same host or NAT is anyone's) to that
	// peer. Only a hint: an initiation's sender is known once it is read.
	byCand map[netip.AddrPort]*lazyPeer
	off    atomic.Int64 // peers not configured yet
}

type lazyPeer struct {
	key [32]byte
	on  atomic.Bool // configured in wireguard-go
}

// setPeers replaces the index with peers, of which those in active are
// configured. Called under Node.mu.
func (l *lazyWG) setPeers(peers, active map[[32]byte]wgPeer) {
	idx := &lazyIndex{byKey: make(map[[32]byte]*lazyPeer, len(peers)), byIP: make(map[netip.Addr]*lazyPeer, 2*len(peers)),
		byCand: make(map[netip.AddrPort]*lazyPeer, 2*len(peers))}
	for k, p := range peers {
		lp := &lazyPeer{key: k}
		_, on := active[k]
		lp.on.Store(on)
		if !on {
			idx.off.Add(1)
		}
		idx.byKey[k] = lp
		for _, a := range p.allowed {
			idx.byIP[a.Addr()] = lp
		}
		for _, c := range p.cands {
			idx.byCand[unmapAP(c)] = lp
		}
	}
	l.idx.Store(idx)
}

// markOn notes that key is configured. Called under Node.mu.
func (l *lazyWG) markOn(key [32]byte) {
	if idx := l.idx.Load(); idx != nil {
		if lp := idx.byKey[key]; lp != nil && lp.on.CompareAndSwap(false, true) {
			idx.off.Add(-1)
		}
	}
}

// needs reports whether key is a map peer not configured yet. A nil l
// (peerBind without a node, in tests) configures nothing lazily.
func (l *lazyWG) needs(key [32]byte) bool {
	if l == nil {
		return false
	}
	idx := l.idx.Load()
	if idx == nil {
		return false
	}
	lp := idx.byKey[key]
	return lp != nil && !lp.on.Load()
}

// candidate reports whether src is a candidate some map peer published, and if so whether that peer is configured yet. An
// initiation from there is no stranger's (initlimit.go).
func (l *lazyWG) candidate(src netip.AddrPort) (known, off bool) {
	if l == nil {
		return false, false
	}
	idx := l.idx.Load()
	if idx == nil {
		return false, false
	}
	lp := idx.byCand[unmapAP(src)]
	if lp == nil {
		return false, false
	}
	return true, !lp.on.Load()
}

// anyOff reports whether some map peer is not configured yet: if none
// is, no initiation needs reading (initlimit.go).
func (l *lazyWG) anyOff() bool {
	if l == nil {
		return false
	}
	idx := l.idx.Load()
	return idx != nil && idx.off.Load() > 0
}

// outbound makes sure the peer owning dst is configured, synchronously.
// It runs on wireguard-go's TUN reader for every outbound packet: one map
// lookup and an atomic load unless the peer is new.
func (l *lazyWG) outbound(dst netip.Addr) {
	if l == nil {
		return
	}
	idx := l.idx.Load()
	if idx == nil {
		return
	}
	if lp := idx.byIP[dst]; lp != nil && !lp.on.Load() {
		l.activate(lp.key)
	}
}

// initiator is the sender of initiation msg if it is a map peer (whether
// configured or not).
func (l *lazyWG) initiator(msg []byte) ([32]byte, bool) {
	if l == nil {
		return [32]byte{}, false
	}
	k, ok := l.reader.Load().initiator(msg)
	if !ok {
		return k, false
	}
	idx := l.idx.Load()
	return k, idx != nil && idx.byKey[k] != nil
}

// setKey makes initiations to priv readable (start, key rotation).
func (l *lazyWG) setKey(priv [32]byte) error {
	r, err := newInitReader(priv)
	if err != nil {
		return err
	}
	l.reader.Store(r)
	return nil
}

// activatePeer configures map peer key in wireguard-go if it is not yet
// (lazyWG.activate). With a persistent keepalive (keepaliveFor) the device
// initiates at once, inside the IpcSet.
func (n *Node) activatePeer(key [32]byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	// After Close has set closed, wireguard-go is being closed: no
	// configuration may start (its lock is held through the close).
	if n.closed || n.refused != nil {
		return
	}
	p, ok := n.peers[key]
	if !ok {
		return
	}
	if _, ok := n.active[key]; !ok {
		if err := n.dev.IpcSet(wgDiff(nil, map[[32]byte]wgPeer{key: p})); err != nil {
			n.log.Warn("could not configure wireguard peer", "peer", shortKey(key), "err", err)
			return
		}
		n.active[key] = p
		n.lazy.activations.Add(1)
		n.log.Debug("configured wireguard peer on demand", "peer", shortKey(key))
	}
	n.lazy.markOn(key)
}

// activeFor returns the peers of a new map to keep configured: those
// configured now, and a peer whose key changed (rotate.go) if its old key
// was, so the rotation's handshake happens at once as it always has.
// Called under n.mu.
func (n *Node) activeFor(peers map[[32]byte]wgPeer) map[[32]byte]wgPeer {
	out := make(map[[32]byte]wgPeer, len(n.active))
	var gone map[netip.Addr]bool // addresses of configured keys that left the map
	for k := range n.active {
		if p, ok := peers[k]; ok {
			out[k] = p
			continue
		}
		if gone == nil {
			gone = map[netip.Addr]bool{}
		}
		for _, a := range n.active[k].allowed {
			gone[a.Addr()] = true
		}
	}
	if gone == nil {
		return out
	}
	for k, p := range peers {
		for _, a := range p.allowed {
			if gone[a.Addr()] {
				out[k] = p
				break
			}
		}
	}
	return out
}

// activator configures the peers whose initiations peerBind queued on
// lazyQ and hands the initiations back for delivery. Owner: Node (n.wg);
// it ends with n.ctx.
func (n *Node) activator() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case pkt := <-n.pbind.initQ:
			// A stranger's initiation, let through the rate limit
			// (initlimit.go): one DH to find whether a lazy peer sent it.
			k, ok := n.lazy.initiator(pkt)
			if !ok || !n.lazy.needs(k) {
				continue
			}
			w := injected{pkt: pkt, ep: n.pbind.endpoint(k)}
			n.activatePeer(k)
			select {
			case n.pbind.inject <- w:
			default:
				n.pbind.lazyDrops.Add(1)
			}
		case w := <-n.pbind.lazyQ:
			n.activatePeer(w.ep.key)
			select {
			case n.pbind.inject <- w:
			default: // full: wireguard-go's retry will do
				n.pbind.lazyDrops.Add(1)
			}
		}
	}
}

// unmapAP is ap with an IPv4-mapped IPv6 address as IPv4.
func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
