package overlay

import (
	"bytes"
	"net/netip"
	"sync"
	"time"
)

// handshakeGuard is the part of peerBind that keeps WireGuard handshakes
// from stalling on path changes. wireguard-go sends a new initiation at most
// every REKEY_TIMEOUT (5 s), so each of these would otherwise cost 5 s:
//
//   - Parking: an initiation for a peer whose path is not known yet (or
//     while our key is being rotated: hold) is parked, not lost, and sent
//     by flush as soon as the path arrives.
//   - Redelivery: an initiation from an address no peer has yet (typically
//     a node that joined a moment ago and knows us before we know it) is
//     passed on and also remembered (remember); when a peer gets that path,
//     flush hands it back for delivery again.
//   - Resend on a new path: our unanswered initiation (and our response
//     until the peer's first data packet shows it arrived) is sent again
//     when the path changes before it was answered; the first copy may
//     have been lost on a path that was still opening. A duplicate that did
//     arrive is rejected by the responder's replay check (WireGuard paper
//     §5.1, TAI64N).
//   - Tie-break: when both sides initiate at once, each consumes the other's
//     initiation, discarding its own, and both wait as responders. The side
//     with the larger WireGuard key therefore drops an incoming initiation
//     from a peer it sent an initiation to in the last REKEY_TIMEOUT (loses);
//     its own handshake then completes.
//
// It owns no socket and reads no clock: every method takes now and returns
// what to do; peerBind does the I/O. Peers are named by WireGuard key.
//
// Concurrency: all methods may be called concurrently. Lock order:
// pathTable.mu before mu (the path table tells the guard of path changes);
// the functions passed to flush must not take pathTable.mu.
type handshakeGuard struct {
	mu    sync.Mutex // guards the fields below
	self  [32]byte   // our WireGuard public key
	hold  bool       // park every initiation: our key is being rotated (rotate.go)
	peers map[[32]byte]*guardPeer
	// strangers holds the latest initiation from each unknown address.
	strangers map[netip.AddrPort]stranger
}

// guardPeer is the handshake state of one peer.
type guardPeer struct {
	wins     bool      // our key is larger: our initiation wins a collision
	parked   []byte    // our last initiation while the path was unknown (or held)
	parkedAt time.Time // when it was parked
	initSent time.Time // our last initiation on the wire (or parked)
	lastInit []byte    // our last initiation sent on a path, until a response arrives
	lastResp []byte    // our last response, until the peer's first data packet
	respSent time.Time
	// resendResp is a copy of lastResp to send on the new path (flush).
	resendResp []byte
}

type stranger struct {
	pkt []byte
	at  time.Time
}

// guardSend is a handshake message flush hands back for sending on pa.
type guardSend struct {
	key [32]byte
	pkt []byte
	pa  *path
}

// guardRedeliver is a stranger's initiation to deliver again as peer key's.
type guardRedeliver struct {
	key [32]byte
	pkt []byte
}

func newHandshakeGuard(self [32]byte) *handshakeGuard {
	return &handshakeGuard{self: self, peers: map[[32]byte]*guardPeer{}, strangers: map[netip.AddrPort]stranger{}}
}

func (g *handshakeGuard) peerLocked(k [32]byte) *guardPeer {
	gp := g.peers[k]
	if gp == nil {
		gp = &guardPeer{wins: bytes.Compare(g.self[:], k[:]) > 0}
		g.peers[k] = gp
	}
	return gp
}

// initiation records our initiation pkt to peer k. pathOf is read under
// the guard's lock (so a path published concurrently either is seen here or
// finds the initiation parked: pathArrived); it returns the path to send pkt
// on now, or nil if pkt was parked (havePath false: no path yet).
func (g *handshakeGuard) initiation(k [32]byte, pkt []byte, pathOf func() *path, now time.Time) (pa *path, havePath bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gp := g.peerLocked(k)
	pa = pathOf()
	if pa == nil || g.hold {
		gp.parked = append(gp.parked[:0], pkt...)
		gp.parkedAt = now
		// A parked initiation goes out with the path (or at endRekey): it
		// counts for the tie-break now. Otherwise the peer's initiation,
		// arriving (or redelivered) before ours leaves, would replace our
		// handshake state and void the response to ours: both sides then
		// wait for the 5 s retry.
		gp.initSent = now
		return nil, pa != nil
	}
	gp.initSent = now
	gp.lastInit = append(gp.lastInit[:0], pkt...)
	return pa, true
}

// response records our handshake response pkt to peer k.
func (g *handshakeGuard) response(k [32]byte, pkt []byte, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gp := g.peerLocked(k)
	gp.lastResp, gp.respSent = append(gp.lastResp[:0], pkt...), now
}

// received notes a WireGuard message of type typ from peer k: a response
// answers our initiation, data shows our response arrived. It reports
// whether the message must be dropped (an initiation that loses the
// tie-break). initSent is not cleared by a response: the response and a
// colliding initiation can arrive in one batch, and the response may not
// even match our handshake.
func (g *handshakeGuard) received(k [32]byte, typ uint32, now time.Time) (drop bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gp := g.peers[k]
	if gp == nil {
		return false
	}
	switch typ {
	case wgMsgResponse:
		gp.lastInit = nil
	case wgMsgData:
		gp.lastResp = nil
	case wgMsgInitiation:
		return gp.losesLocked(now)
	}
	return false
}

// loses reports whether an incoming initiation from k collides with our own
// unanswered one and must give way.
func (g *handshakeGuard) loses(k [32]byte, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	gp := g.peers[k]
	return gp != nil && gp.losesLocked(now)
}

func (gp *guardPeer) losesLocked(now time.Time) bool {
	return gp.wins && !gp.initSent.IsZero() && now.Sub(gp.initSent) < wgRekeyTimeout
}

// remember keeps the initiation pkt from the unknown address src for
// redelivery (flush) should a peer get that address.
func (g *handshakeGuard) remember(src netip.AddrPort, pkt []byte, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.strangers[src]; !ok && len(g.strangers) >= maxStrangers {
		var oldest netip.AddrPort
		var at time.Time
		for a, st := range g.strangers {
			if at.IsZero() || st.at.Before(at) {
				oldest, at = a, st.at
			}
		}
		delete(g.strangers, oldest)
	}
	g.strangers[src] = stranger{pkt: append([]byte(nil), pkt...), at: now}
}

// pathArrived is told that peer k got its first path; it reports whether a
// parked initiation waits for flush.
func (g *handshakeGuard) pathArrived(k [32]byte) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	gp := g.peers[k]
	return gp != nil && gp.parked != nil
}

// pathMoved is told that peer k's path changed, or that a path answered for
// the first time (permissions and mappings exist now). Our unanswered
// handshake messages are queued for flush to send again; it reports
// whether there is something to flush.
func (g *handshakeGuard) pathMoved(k [32]byte, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	gp := g.peers[k]
	if gp == nil {
		return false
	}
	flush := false
	if gp.lastResp != nil && now.Sub(gp.respSent) < wgRekeyTimeout {
		gp.resendResp = append(gp.resendResp[:0], gp.lastResp...)
		flush = true
	}
	if gp.lastInit == nil || gp.parked != nil || g.hold || now.Sub(gp.initSent) >= wgRekeyTimeout {
		return flush
	}
	gp.parked = append(gp.parked[:0], gp.lastInit...)
	gp.parkedAt = gp.initSent
	return true
}

// flush returns the handshake messages to send now (parked initiations and
// queued resends of peers with a path, pathOf) and the strangers'
// initiations to deliver again as the peer whose address they came from
// (peerAt); both are forgotten here. Parked initiations older than
// REKEY_TIMEOUT are dropped: wireguard-go has sent a newer one by then.
func (g *handshakeGuard) flush(now time.Time, peerAt func(netip.AddrPort) ([32]byte, bool), pathOf func([32]byte) *path) (sends []guardSend, redeliver []guardRedeliver) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for ap, st := range g.strangers {
		k, ok := peerAt(ap)
		if !ok {
			continue
		}
		delete(g.strangers, ap)
		if now.Sub(st.at) < wgRekeyTimeout {
			redeliver = append(redeliver, guardRedeliver{key: k, pkt: st.pkt})
		}
	}
	for k, gp := range g.peers {
		pa := pathOf(k)
		if gp.resendResp != nil && pa != nil {
			sends = append(sends, guardSend{key: k, pkt: gp.resendResp, pa: pa})
			gp.resendResp = nil
		}
		if gp.parked == nil || pa == nil || g.hold {
			continue
		}
		if now.Sub(gp.parkedAt) < wgRekeyTimeout {
			sends = append(sends, guardSend{key: k, pkt: gp.parked, pa: pa})
			gp.initSent = now
		}
		gp.parked = nil
	}
	return sends, redeliver
}

// forget drops peer k's state (it left the map).
func (g *handshakeGuard) forget(k [32]byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.peers, k)
}

// beginRekey makes self the key the tie-break compares with, forgets
// initiations sent or parked under the old key, and holds every initiation
// until endRekey.
func (g *handshakeGuard) beginRekey(self [32]byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.self = self
	g.hold = true
	for k, gp := range g.peers {
		gp.wins = bytes.Compare(self[:], k[:]) > 0
		gp.initSent = time.Time{}
		gp.parked = nil
	}
}

// endRekey stops holding initiations; unless send (the caller then
// flushes), the held ones are discarded.
func (g *handshakeGuard) endRekey(send bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = false
	if !send {
		for _, gp := range g.peers {
			gp.parked = nil
			gp.initSent = time.Time{}
		}
	}
}
