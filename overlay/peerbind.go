package overlay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/agentnet/agentnet/relay/turnclient"
	"github.com/agentnet/agentnet/wire"
)

// WireGuard message types (WireGuard paper §5.4: the first 4 bytes, little
// endian) and wireguard-go's handshake retry interval.
const (
	wgMsgInitiation = 1
	wgMsgResponse   = 2
	wgMsgCookie     = 3
	wgMsgData       = 4
	wgRekeyTimeout  = 5 * time.Second
)

// peerEndpointPrefix starts the endpoint strings peerBind hands to
// wireguard-go: "peer:" + hex WireGuard public key.
const peerEndpointPrefix = "peer:"

// peerBind is the conn.Bind wireguard-go sees. Its endpoints name peers, not
// addresses (as Tailscale's magicsock does): the UDP path of each peer is set
// from the network map with setPeers, and a path change never touches the
// WireGuard config. This is where NAT traversal and relay paths plug in.
//
// It also removes two handshake stalls that plain address endpoints have.
// Each would otherwise cost REKEY_TIMEOUT (5 s), because wireguard-go sends
// a new initiation at most that often:
//
//   - An initiation for a peer whose path is not known yet is parked, not
//     lost, and sent as soon as the path arrives.
//   - An initiation from an address no peer has yet (typically a node that
//     joined a moment ago and knows us before we know it) is passed on and
//     also remembered; when setPeers gives a peer that path, the initiation
//     is delivered again through a second receive function, so the
//     handshake completes without waiting for the retry.
//   - Simultaneous initiations: when both sides initiate at once, each
//     consumes the other's initiation, discarding its own, and both wait as
//     responders. Tie-break: the side with the larger WireGuard key drops an
//     incoming initiation from a peer it sent an initiation to in the last
//     REKEY_TIMEOUT; its own handshake then completes.
//
// Path discovery lives in paths.go (choice), probe.go (disco pings, STUN,
// receiver-index attribution) and relayconn.go (the relay allocation).
//
// Concurrency: Send and the receive functions may run concurrently with
// setPeerInfo; mu guards the peer tables and every peerEndpoint's mutable
// fields. Data sends take no lock: a peer's path is an atomic pointer to an
// immutable path, and the allocation an atomic pointer.
type peerBind struct {
	*Bind
	self [32]byte // our WireGuard public key
	log  *slog.Logger
	now  func() time.Time

	// Set before use, then read-only.
	disco      *discoKeys                                // nil: no path discovery (peers get their first endpoint)
	askProbe   func(peer string)                         // asks the coordinator for a simultaneous probe; optional
	ownCands   func() []netip.AddrPort                   // our candidates, for call-me-maybe; optional
	onMapped   func()                                    // our STUN-mapped address changed; optional
	onPathLost func()                                    // a verified direct path died; optional
	testDrop   atomic.Pointer[func(netip.AddrPort) bool] // tests: drop direct traffic to/from matching addresses
	forceRelay bool                                      // Config.ForceRelay: never choose or probe a direct path; set before Open
	lazy       *lazyWG                                   // lazily configured peers (lazywg.go); nil: all are configured

	alloc   atomic.Pointer[turnclient.Allocation] // our relay allocation, nil without
	allocRx chan allocPkt                         // packets from the allocation for wireguard-go; bounded
	wake    chan struct{}                         // wakes probeLoop

	mu      sync.Mutex // guards the fields below and peerEndpoint fields
	byKey   map[[32]byte]*peerEndpoint
	byAddr  map[netip.AddrPort]*peerEndpoint // every candidate address → peer
	byDisco map[[32]byte]*peerEndpoint
	byIndex map[uint32]*peerEndpoint // our handshake sender indexes → peer
	relays  []wire.Relay
	stunTx  map[[12]byte]stunReq
	mapped  map[string]netip.AddrPort // relay name → our address as it sees us
	stunAt  time.Time                 // last STUN answer
	denied  map[string]time.Time      // disco denial log limiter
	// strangers holds the latest initiation from each unknown address.
	strangers map[netip.AddrPort]stranger
	inject    chan injected // initiations to deliver again; bounded
	// lazyQ holds initiations from peers wireguard-go does not have yet,
	// for the node's activator (lazywg.go), which configures the peer and
	// then passes them to inject; bounded, drops counted in lazyDrops.
	lazyQ chan injected
	// done is closed by Close: it ends the inject receive function.
	done chan struct{}
	// hold parks every outgoing initiation while this node's WireGuard
	// key is being rotated (rotate.go: beginRekey/endRekey).
	hold bool
	// flushWanted: a peer with a parked initiation got its first path
	// (chooseLocked); the next sendOuts flushes, outside mu.
	flushWanted atomic.Bool

	parkedSent  atomic.Uint64 // parked initiations sent once a path arrived
	noPath      atomic.Uint64 // packets dropped: no path to the peer yet
	tieDropped  atomic.Uint64 // initiations dropped by the tie-break
	redelivered atomic.Uint64 // strangers' initiations delivered again
	lazyDrops   atomic.Uint64 // initiations from unconfigured peers dropped: lazyQ full

	probesSent      atomic.Uint64 // disco pings sent
	pongsRecv       atomic.Uint64 // disco pings answered
	discoRx         atomic.Uint64 // disco messages accepted
	discoBad        atomic.Uint64 // disco messages dropped (do not open, unknown sender, stale)
	junkRx          atomic.Uint64 // packets neither WireGuard, disco nor an expected STUN answer
	pathSwitches    atomic.Uint64 // path changes of any peer
	indexAttributed atomic.Uint64 // packets from unknown sources named by receiver index
	allocRxPackets  atomic.Uint64 // packets from the allocation handed to wireguard-go
	allocRxDrops    atomic.Uint64 // packets from the allocation dropped (unattributed, queue full)
	allocTxErrors   atomic.Uint64
}

type stranger struct {
	pkt []byte
	at  time.Time
}

type injected struct {
	pkt []byte
	ep  *peerEndpoint
}

// maxStrangers bounds the strangers table (an attacker can send from many
// addresses; the oldest entry is evicted).
const maxStrangers = 64

var _ conn.Bind = (*peerBind)(nil)

func newPeerBind(b *Bind, self [32]byte, log *slog.Logger) *peerBind {
	return &peerBind{Bind: b, self: self, log: log, now: time.Now, byKey: map[[32]byte]*peerEndpoint{}, byAddr: map[netip.AddrPort]*peerEndpoint{},
		byDisco: map[[32]byte]*peerEndpoint{}, byIndex: map[uint32]*peerEndpoint{}, stunTx: map[[12]byte]stunReq{},
		mapped: map[string]netip.AddrPort{}, denied: map[string]time.Time{},
		strangers: map[netip.AddrPort]stranger{}, inject: make(chan injected, 16), lazyQ: make(chan injected, 64),
		allocRx: make(chan allocPkt, allocQueue), wake: make(chan struct{}, 1)}
}

// peerEndpoint is a conn.Endpoint naming one peer.
type peerEndpoint struct {
	key  [32]byte
	wins bool // our key is larger: our initiation wins a collision

	path atomic.Pointer[path] // current path; nil: unknown

	// guarded by peerBind.mu
	parked   []byte    // our last initiation while path was unknown
	parkedAt time.Time // when it was parked
	initSent time.Time // our last initiation on the wire
	// lastInit is a copy of our last initiation sent on a path, kept until
	// a handshake response arrives: when the path changes before that, it
	// is sent again on the new one (the first copy may have been lost on
	// a path that was still opening, e.g. before the peer's relay
	// permission or NAT mapping existed), instead of waiting for
	// wireguard-go's 5 s retry. A duplicate that did arrive is rejected by
	// the responder's replay check (WireGuard paper §5.1, TAI64N).
	lastInit []byte
	// lastResp is the same for our last handshake response (the initiator
	// waits 5 s for it too): kept until the peer's first data packet shows
	// it arrived; resendResp is a copy queued for flush.
	lastResp   []byte
	respSent   time.Time
	resendResp []byte

	name               string
	disco              *[32]byte // shared box key; nil: the peer has no disco key
	discoPub           [32]byte
	endpoints, relayed []netip.AddrPort // from the map
	cands              map[netip.AddrPort]*candidate
	pings              map[txID]sentPing
	allocSrc           netip.AddrPort // where its packets arrive from on our allocation
	allocPong          time.Time      // last pong through our allocation
	allocRTT           time.Duration
	round              int       // probe rounds since roundStart
	roundStart         time.Time // start of the current series of rounds
	roundAt            time.Time // next round; zero: none scheduled
	wantAsk            bool      // ask the peer to probe at the same time
	lastActivePing     time.Time
	probeGen           uint64
	reason             string    // why the path is not direct
	idx                [4]uint32 // our latest handshake sender indexes
	idxN               int
}

var _ conn.Endpoint = (*peerEndpoint)(nil)

func peerEndpointString(k [32]byte) string { return peerEndpointPrefix + hex.EncodeToString(k[:]) }

func (e *peerEndpoint) ClearSrc()           {}
func (e *peerEndpoint) SrcToString() string { return "" }
func (e *peerEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// DstToString, DstIP and DstToBytes describe the current path; wireguard-go
// uses them for status (UAPI get), logs and cookie MACs.
func (e *peerEndpoint) DstToString() string {
	if ap := e.currentPath(); ap.IsValid() {
		return ap.String()
	}
	return ""
}
func (e *peerEndpoint) DstIP() netip.Addr { return e.currentPath().Addr() }
func (e *peerEndpoint) DstToBytes() []byte {
	b, _ := e.currentPath().MarshalBinary()
	return b
}

func (e *peerEndpoint) currentPath() netip.AddrPort {
	if pa := e.path.Load(); pa != nil {
		return pa.addr
	}
	return netip.AddrPort{}
}

// ParseEndpoint accepts "peer:<hex key>" for peers and "ip:port" otherwise.
func (p *peerBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if !strings.HasPrefix(s, peerEndpointPrefix) {
		return p.Bind.ParseEndpoint(s)
	}
	raw, err := hex.DecodeString(s[len(peerEndpointPrefix):])
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("overlay: bad peer endpoint %.20q", s)
	}
	var k [32]byte
	copy(k[:], raw)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.endpointLocked(k), nil
}

func (p *peerBind) endpointLocked(k [32]byte) *peerEndpoint {
	e := p.byKey[k]
	if e == nil {
		e = &peerEndpoint{key: k, wins: bytes.Compare(p.self[:], k[:]) > 0, pings: map[txID]sentPing{}}
		p.byKey[k] = e
	}
	return e
}

// flush sends the parked initiations of peers that now have a path, and
// delivers again the initiations strangers sent from what is now a peer's
// path. It runs after wireguard-go has been told about new peers, so the
// redelivered initiations find them.
func (p *peerBind) flush() {
	type send struct {
		pkt []byte
		pa  *path
	}
	var out []send
	now := time.Now()
	p.mu.Lock()
	for ap, st := range p.strangers {
		e := p.byAddr[ap]
		if e == nil {
			continue
		}
		delete(p.strangers, ap)
		if now.Sub(st.at) < wgRekeyTimeout {
			p.redeliver(injected{st.pkt, e})
		}
	}
	for _, e := range p.byKey {
		pa := e.path.Load()
		if e.resendResp != nil && pa != nil {
			out = append(out, send{e.resendResp, pa})
			e.resendResp = nil
		}
		if e.parked == nil || pa == nil || p.hold {
			continue
		}
		if now.Sub(e.parkedAt) < wgRekeyTimeout {
			out = append(out, send{e.parked, pa})
			e.initSent = now
		}
		e.parked = nil
	}
	p.mu.Unlock()
	for _, f := range out {
		if p.sendPath([][]byte{f.pkt}, f.pa) == nil {
			p.parkedSent.Add(1)
			p.log.Debug("sent parked initiation", "endpoint", f.pa.addr)
		}
	}
}

// redeliver queues in for the inject receive function, through the
// node's activator when wireguard-go does not have the peer yet. It never
// blocks: when full, wireguard-go's retry will do.
func (p *peerBind) redeliver(in injected) {
	q := p.inject
	if p.lazy.needs(in.ep.key) {
		q = p.lazyQ
	}
	select {
	case q <- in:
	default:
		if q == p.lazyQ {
			p.lazyDrops.Add(1)
		}
	}
}

// lazyInitLocked takes initiation b out of the batch (the caller zeroes
// its size) when it comes from a map peer wireguard-go does not have yet:
// e if its path is known, else the key read out of b. It returns the
// delivery to queue on lazyQ, ok false if b should go on as it is.
func (p *peerBind) lazyInitLocked(e *peerEndpoint, b []byte) (injected, bool) {
	if p.lazy == nil || msgType(b) != wgMsgInitiation {
		return injected{}, false
	}
	if e == nil {
		k, ok := p.lazy.initiator(b)
		if !ok {
			return injected{}, false
		}
		e = p.endpointLocked(k)
	}
	if !p.lazy.needs(e.key) {
		return injected{}, false
	}
	return injected{pkt: append([]byte(nil), b...), ep: e}, true
}

// queueLazy hands wants to the activator (never blocks; drops counted).
func (p *peerBind) queueLazy(wants []injected) {
	for _, w := range wants {
		select {
		case p.lazyQ <- w:
		default:
			p.lazyDrops.Add(1)
		}
	}
}

func msgType(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// Send resolves a peer endpoint to its current path.
func (p *peerBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*peerEndpoint)
	if !ok {
		return p.Bind.Send(bufs, ep)
	}
	typ := msgType(bufs[0])
	if len(bufs) != 1 || typ != wgMsgInitiation && typ != wgMsgResponse {
		// Data path: no lock, the path is an atomic read. Data without a
		// path is dropped like a lost packet (only initiations are parked).
		pa := e.path.Load()
		if pa == nil {
			p.noPath.Add(uint64(len(bufs)))
			return nil
		}
		return p.sendPath(bufs, pa)
	}
	p.mu.Lock() // setPeerInfo sets paths under mu: read it there, or a flush could be missed
	p.recordIndexLocked(e, bufs[0])
	pa := e.path.Load()
	if typ == wgMsgResponse {
		e.lastResp, e.respSent = append(e.lastResp[:0], bufs[0]...), time.Now()
		p.mu.Unlock()
		if pa == nil {
			p.noPath.Add(1)
			return nil
		}
		return p.sendPath(bufs, pa)
	}
	if pa == nil || p.hold {
		e.parked = append(e.parked[:0], bufs[0]...)
		e.parkedAt = time.Now()
		// A parked initiation goes out with the path (or at endRekey): it
		// counts for the tie-break now. Otherwise the peer's initiation,
		// arriving (or redelivered) before ours leaves, would replace our
		// handshake state and void the response to ours: both sides then
		// wait for the 5 s retry.
		e.initSent = e.parkedAt
		p.mu.Unlock()
		if pa == nil {
			p.noPath.Add(1)
		}
		return nil // sent by flush once the path arrives (or the key rotation ends)
	}
	e.initSent = time.Now()
	e.lastInit = append(e.lastInit[:0], bufs[0]...)
	p.log.Debug("initiation sent", "peer", shortKey(e.key), "wins", e.wins)
	p.mu.Unlock()
	return p.sendPath(bufs, pa)
}

// resendInitLocked re-sends (through flush) our unanswered initiation to e
// on its new path.
func (p *peerBind) resendInitLocked(e *peerEndpoint, now time.Time) {
	if e.lastResp != nil && now.Sub(e.respSent) < wgRekeyTimeout {
		e.resendResp = append(e.resendResp[:0], e.lastResp...)
		p.flushWanted.Store(true)
	}
	if e.lastInit == nil || e.parked != nil || p.hold || now.Sub(e.initSent) >= wgRekeyTimeout {
		return
	}
	e.parked = append(e.parked[:0], e.lastInit...)
	e.parkedAt = e.initSent
	p.flushWanted.Store(true)
}

// handshakeAnsweredLocked notes what b from e says about our handshake
// messages: a response answers our initiation, data shows our response
// arrived.
func (p *peerBind) handshakeAnsweredLocked(e *peerEndpoint, b []byte) {
	switch msgType(b) {
	case wgMsgResponse:
		e.lastInit = nil
	case wgMsgData:
		e.lastResp = nil
	}
}

// sendPath sends bufs along pa: our socket, or our relay allocation.
func (p *peerBind) sendPath(bufs [][]byte, pa *path) error {
	if pa.viaAlloc {
		a := p.alloc.Load()
		if a == nil {
			p.noPath.Add(uint64(len(bufs)))
			return nil
		}
		for _, b := range bufs {
			if err := a.WriteTo(b, pa.addr); err != nil {
				p.allocTxErrors.Add(1)
				return err
			}
		}
		return nil
	}
	if pa.kind == kindDirect && p.blockedDirect(pa.addr) {
		return nil
	}
	return p.Bind.Send(bufs, pa.ep)
}

// blockedDirect is the test hook that emulates a NAT dropping direct
// traffic; always false in production (testDrop nil).
func (p *peerBind) blockedDirect(ap netip.AddrPort) bool {
	f := p.testDrop.Load()
	return f != nil && (*f)(ap)
}

// Open wraps the receive functions: packets from a known peer path carry
// that peer's endpoint, and the initiation tie-break is applied. It adds one
// receive function that delivers remembered initiations again.
func (p *peerBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := p.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	for i, fn := range fns {
		fns[i] = p.receive(fn)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.done = done
	p.mu.Unlock()
	fns = append(fns, p.allocReceive(done), func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			select {
			case in := <-p.inject:
				if p.loses(in.ep) {
					continue
				}
				sizes[0] = copy(packets[0], in.pkt)
				eps[0] = in.ep
				p.redelivered.Add(1)
				p.log.Debug("redelivering initiation received before the peer was known", "peer", shortKey(in.ep.key))
				return 1, nil
			case <-done:
				return 0, net.ErrClosed
			}
		}
	})
	return fns, actual, nil
}

// Close closes the socket and ends the redelivery receive function.
func (p *peerBind) Close() error {
	p.mu.Lock()
	if p.done != nil {
		close(p.done)
		p.done = nil
	}
	p.mu.Unlock()
	return p.Bind.Close()
}

func (p *peerBind) receive(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(packets, sizes, eps)
		if n == 0 {
			return n, err
		}
		var outs []discoOut
		var wants []injected
		mappedChanged := false
		now := p.now()
		p.mu.Lock()
		for i := range n {
			u, ok := eps[i].(*UDPEndpoint)
			if !ok {
				continue
			}
			src := u.AddrPort()
			b := packets[i][:sizes[i]]
			if p.blockedDirect(src) {
				sizes[i] = 0
				continue
			}
			if !isWG(b) {
				sizes[i] = 0 // wireguard-go skips empty messages
				var changed bool
				outs, changed = p.handleControlLocked(b, src, false, now, outs)
				mappedChanged = mappedChanged || changed
				continue
			}
			e := p.byAddr[src]
			if e == nil {
				e = p.attributeLocked(b, src, false, now)
			}
			if w, ok := p.lazyInitLocked(e, b); ok {
				sizes[i] = 0 // delivered again once the peer is configured
				wants = append(wants, w)
				continue
			}
			if e == nil {
				// Unknown path: wireguard-go roams to the raw address if
				// the sender is a known peer; remember initiations in
				// case it is one we are about to learn of.
				if msgType(packets[i][:sizes[i]]) == wgMsgInitiation {
					p.rememberLocked(u.AddrPort(), packets[i][:sizes[i]])
				}
				continue
			}
			eps[i] = e
			p.handshakeAnsweredLocked(e, packets[i][:sizes[i]])
			// initSent is not cleared by a response: the response and a
			// colliding initiation can arrive in one batch, and the
			// response may not even match our handshake.
			if msgType(packets[i][:sizes[i]]) == wgMsgInitiation && p.losesLocked(e) {
				sizes[i] = 0 // wireguard-go skips empty messages
			}
		}
		p.mu.Unlock()
		p.queueLazy(wants)
		if len(outs) > 0 || p.flushWanted.Load() {
			p.sendOuts(outs)
		}
		if mappedChanged && p.onMapped != nil {
			p.onMapped()
		}
		return n, err
	}
}

func (p *peerBind) rememberLocked(ap netip.AddrPort, pkt []byte) {
	if _, ok := p.strangers[ap]; !ok && len(p.strangers) >= maxStrangers {
		var oldest netip.AddrPort
		var at time.Time
		for a, st := range p.strangers {
			if at.IsZero() || st.at.Before(at) {
				oldest, at = a, st.at
			}
		}
		delete(p.strangers, oldest)
	}
	p.strangers[ap] = stranger{pkt: append([]byte(nil), pkt...), at: time.Now()}
}

// loses reports whether an incoming initiation from e collides with our own
// unanswered one and must give way (counted).
func (p *peerBind) loses(e *peerEndpoint) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.losesLocked(e)
}

func (p *peerBind) losesLocked(e *peerEndpoint) bool {
	if e.wins && time.Since(e.initSent) < wgRekeyTimeout {
		p.tieDropped.Add(1)
		p.log.Debug("handshake collision: dropping peer's initiation, ours wins", "peer", shortKey(e.key))
		return true
	}
	return false
}

// shortKey is a log-safe short name of a WireGuard public key.
func shortKey(k [32]byte) string { return hex.EncodeToString(k[:4]) }
