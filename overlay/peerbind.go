package overlay

import (
	"context"
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

	"github.com/pion/stun/v3"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/agentnet/agentnet/wire"
)

// peerBind is the conn.Bind wireguard-go sees. Its endpoints name peers, not
// addresses (as Tailscale's magicsock does): the UDP path of each peer is set
// from the network map with setPeerInfo, and a path change never touches the
// WireGuard config. This is where NAT traversal and relay paths plug in.
//
// It is a thin adapter over three parts that own no socket:
//
//   - handshakeGuard (handshake_guard.go): parking of initiations,
//     redelivery of strangers' initiations, resends on a new path, and the
//     initiation tie-break;
//   - pathTable (pathtable.go, paths.go, probe.go): candidates, path choice
//     and the probe schedule, a state machine advanced by tick(now) that
//     returns what to send;
//   - the relay path (relayconn.go): our relay allocation and the packets
//     that arrive through it.
//
// peerBind does the I/O for all three: Send, the receive functions, and
// sending what the parts return.
//
// Inbound: a data packet from a known peer path takes no lock: the
// receive function loads the published address → peer table (peerIndex,
// copy on write) once per batch and looks the source up. Handshake
// messages, disco and STUN take short locks per packet; disco boxes are
// opened and STUN parsed outside every lock.
//
// Outbound: data sends take no lock either: a peer's path is an atomic
// pointer to an immutable path, and the allocation an atomic pointer.
// Handshake messages go through the guard.
//
// Lock order: pathTable.mu before handshakeGuard.mu; doneMu is a leaf. No
// packet is sent under any of them.
type peerBind struct {
	// sock is the UDP socket (a *Bind). Sends load it; Open reads it, so a
	// replacement (tests: a decorator that drops traffic as a NAT would,
	// then wireguard-go's BindUpdate) takes effect for receiving at the
	// next Open.
	sock       atomic.Pointer[socketRef]
	*pathTable // candidates, path choice, probing
	relayPath  // our relay allocation
	guard      *handshakeGuard
	log        *slog.Logger
	now        func() time.Time

	// Set before use, then read-only.
	askProbe   func(peer string)       // asks the coordinator for a simultaneous probe; optional
	ownCands   func() []netip.AddrPort // our candidates, for call-me-maybe; optional
	onMapped   func()                  // our STUN-mapped address changed; optional
	onPathLost func()                  // a verified direct path died; optional
	lazy       *lazyWG                 // lazily configured peers (lazywg.go); nil: all are configured

	inject chan injected // initiations to deliver again; bounded
	// lazyQ holds initiations from peers wireguard-go does not have yet,
	// for the node's activator (lazywg.go), which configures the peer and
	// then passes them to inject; bounded, drops counted in lazyDrops.
	lazyQ chan injected
	// initQ holds copies of initiations from sources no path names, for
	// the activator to read the sender's key out of (initlimit.go):
	// bounded and rate limited; drops counted.
	initQ     chan []byte
	initLimit initLimiter

	doneMu sync.Mutex    // guards done
	done   chan struct{} // closed by Close: ends the inject and allocation receive functions

	parkedSent  atomic.Uint64 // parked initiations sent once a path arrived
	noPath      atomic.Uint64 // packets dropped: no path to the peer yet
	tieDropped  atomic.Uint64 // initiations dropped by the tie-break
	redelivered atomic.Uint64 // strangers' initiations delivered again
	lazyDrops   atomic.Uint64 // initiations from unconfigured peers dropped: lazyQ full

	// Junk and unread initiations (issue 17 item 6; initlimit.go). junkRx
	// (pathTable) counts what is neither WireGuard, disco nor STUN.
	junkShort   atomic.Uint64 // too short for a message type (4 bytes) or for its WireGuard type
	junkWG      atomic.Uint64 // WireGuard-shaped but invalid: bad size, or an initiation with a bad MAC1
	wgUnknown   atomic.Uint64 // WireGuard responses, cookies and data from unknown sources naming none of our sessions
	initLimited atomic.Uint64 // strangers' initiations not read: rate limit
	initKnown   atomic.Uint64 // initiations from map peers' candidates without a path: not strangers'
	initQDrops  atomic.Uint64 // strangers' initiations not read: initQ full
	initDropped atomic.Uint64 // strangers' initiations not passed to wireguard-go: rate limit
}

// socket is what peerBind needs of the UDP socket under it: *Bind, or in
// tests a decorator of one.
type socket interface {
	conn.Bind
	// SendTTL sends one datagram with this IP TTL (bind_ttl_*.go); an
	// error means the datagram was not sent.
	SendTTL(pkt []byte, dst netip.AddrPort, ttl int) error
	LocalAddr() netip.AddrPort
}

type socketRef struct{ socket }

// socket returns the socket to send on.
func (p *peerBind) socket() socket { return p.sock.Load().socket }

// LocalAddr is the socket's local address.
func (p *peerBind) LocalAddr() netip.AddrPort { return p.socket().LocalAddr() }

// BatchSize is the socket's.
func (p *peerBind) BatchSize() int { return p.socket().BatchSize() }

// SetMark sets the socket's mark (SO_MARK).
func (p *peerBind) SetMark(mark uint32) error { return p.socket().SetMark(mark) }

// peerBindConfig configures newPeerBind.
type peerBindConfig struct {
	Socket socket           // required: the UDP socket (a *Bind)
	Self   [32]byte         // required: our WireGuard public key
	Logger *slog.Logger     // optional; default slog.Default()
	Now    func() time.Time // optional; default time.Now. Every time read of the bind and its parts
}

type injected struct {
	pkt []byte
	ep  *peerEndpoint
}

var _ conn.Bind = (*peerBind)(nil)

func newPeerBind(cfg peerBindConfig) *peerBind {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := newHandshakeGuard(cfg.Self)
	p := &peerBind{pathTable: newPathTable(cfg.Self, g, cfg.Now, cfg.Logger), guard: g,
		relayPath: relayPath{allocRx: make(chan allocPkt, allocQueue)},
		log:       cfg.Logger, now: cfg.Now, inject: make(chan injected, 16), lazyQ: make(chan injected, 64),
		initQ: make(chan []byte, initReadQueue)}
	p.sock.Store(&socketRef{cfg.Socket})
	return p
}

// peerEndpoint is a conn.Endpoint naming one peer.
type peerEndpoint struct {
	key [32]byte

	path        atomic.Pointer[path] // current path; nil: unknown
	respPending atomic.Bool          // the guard waits for data showing our response arrived

	// guarded by pathTable.mu
	wins               bool // our key is larger: we keep slow probe rounds going
	name               string
	disco              *[32]byte // shared box key; nil: the peer has no disco key. Replaced, never modified
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
	punch              punchState // pre-punch agreement (probe.go)
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
		return p.socket().ParseEndpoint(s)
	}
	raw, err := hex.DecodeString(s[len(peerEndpointPrefix):])
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("overlay: bad peer endpoint %.20q", s)
	}
	return p.endpoint([32]byte(raw)), nil
}

// flush sends the parked initiations of peers that now have a path, and
// delivers again the initiations strangers sent from what is now a peer's
// path. It runs after wireguard-go has been told about new peers, so the
// redelivered initiations find them.
func (p *peerBind) flush() {
	ix := p.peers()
	peerAt := func(ap netip.AddrPort) ([32]byte, bool) {
		if e := ix.byAddr[ap]; e != nil {
			return e.key, true
		}
		return [32]byte{}, false
	}
	pathOf := func(k [32]byte) *path {
		if e := ix.byKey[k]; e != nil {
			return e.path.Load()
		}
		return nil
	}
	sends, redeliver := p.guard.flush(p.now(), peerAt, pathOf)
	for _, r := range redeliver {
		if e := ix.byKey[r.key]; e != nil {
			p.redeliver(injected{r.pkt, e})
		}
	}
	for _, s := range sends {
		if p.sendPath([][]byte{s.pkt}, s.pa) == nil {
			p.parkedSent.Add(1)
			p.log.Debug("sent parked initiation", "endpoint", s.pa.addr)
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

// lazyInit takes initiation b out of the batch (the caller zeroes its
// size) when it comes from the path of e, a map peer wireguard-go does not
// have yet. It returns the delivery to queue on lazyQ, ok false if b
// should go on as it is. Initiations from unknown sources (e nil) are
// screenInit's.
func (p *peerBind) lazyInit(e *peerEndpoint, b []byte) (injected, bool) {
	if p.lazy == nil || e == nil || msgType(b) != wgMsgInitiation || !p.lazy.needs(e.key) {
		return injected{}, false
	}
	return injected{pkt: append([]byte(nil), b...), ep: e}, true
}

// screenInit looks at initiation b from src, a source no peer path names,
// and reports whether to drop it: junk, or over the rate of strangers'
// initiations passed to wireguard-go (both counted). If some map peer is
// not configured yet and the read limit allows, a copy goes to initQ for
// the activator to find its sender (initlimit.go). Cheap: no DH here,
// never blocks.
func (p *peerBind) screenInit(b []byte, src netip.AddrPort, now time.Time) (drop bool) {
	if len(b) < wgInitiationSize {
		p.junkShort.Add(1)
		return true
	}
	if len(b) != wgInitiationSize {
		p.junkWG.Add(1)
		return true
	}
	if p.lazy == nil {
		return false
	}
	r := p.lazy.reader.Load()
	if r == nil {
		return false
	}
	// A source that is a candidate some map peer published is no
	// stranger, even before a path names it: its initiation goes on to
	// wireguard-go whatever the strangers' rate, and while that peer is not
	// configured it is read with only its own candidate's limit, so a flood
	// from elsewhere that empties the strangers' buckets does not cost a
	// new peer wireguard-go's 5 s retry (issue 17 item 4).
	known, off := p.lazy.candidate(src)
	if !known && p.initLimit.strangersSpent(now, p.lazy.anyOff()) {
		// Under a flood: no stranger's initiation would be passed on
		// or read now, valid MAC1 or not, so not even MAC1 is computed.
		p.initDropped.Add(1)
		if p.lazy.anyOff() {
			p.initLimited.Add(1)
		}
		return true
	}
	if !r.mac1OK(b) {
		p.junkWG.Add(1)
		return true
	}
	if known {
		p.initKnown.Add(1)
	} else if drop = !p.initLimit.allowPass(now); drop {
		p.initDropped.Add(1)
	}
	if !p.lazy.anyOff() {
		return drop // nothing to find: wireguard-go knows every peer it may be
	}
	if off {
		if !p.initLimit.allowKnown(src, now) {
			p.initLimited.Add(1)
			return drop
		}
	} else if !p.initLimit.allow(src.Addr(), now) {
		p.initLimited.Add(1)
		return drop
	} else if len(p.initQ) >= initReadQueue-initReadKnownSlots {
		p.initQDrops.Add(1) // the last slots are kept for known sources
		return drop
	}
	select {
	case p.initQ <- append([]byte(nil), b...):
	default:
		p.initQDrops.Add(1)
	}
	return drop
}

// screenWG drops (counting) a WireGuard-shaped packet from an unknown
// source that is too short or too long for its type; wireguard-go would
// drop it too, after more work.
func (p *peerBind) screenWG(b []byte) (drop bool) {
	want := 0
	switch msgType(b) {
	case wgMsgInitiation:
		want = wgInitiationSize
	case wgMsgResponse:
		want = wgResponseSize
	case wgMsgCookie:
		want = wgCookieSize
	case wgMsgData:
		if len(b) < wgDataMinSize {
			p.junkShort.Add(1)
			return true
		}
		return false
	}
	switch {
	case len(b) < want:
		p.junkShort.Add(1)
		return true
	case len(b) > want:
		p.junkWG.Add(1)
		return true
	}
	return false
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
		return p.socket().Send(bufs, ep)
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
	p.recordIndex(e, bufs[0])
	now := p.now()
	if typ == wgMsgResponse {
		p.guard.response(e.key, bufs[0], now)
		e.respPending.Store(true)
		pa := e.path.Load()
		if pa == nil {
			p.noPath.Add(1)
			return nil
		}
		return p.sendPath(bufs, pa)
	}
	// The guard reads the path under its lock: the path table publishes a
	// path before it asks the guard for parked initiations, so one of the
	// two sees the other.
	pa, havePath := p.guard.initiation(e.key, bufs[0], e.path.Load, now)
	if pa == nil {
		if !havePath {
			p.noPath.Add(1)
		}
		return nil // sent by flush once the path arrives (or the key rotation ends)
	}
	p.log.Debug("initiation sent", "peer", shortKey(e.key))
	return p.sendPath(bufs, pa)
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
	return p.socket().Send(bufs, pa.ep)
}

// Open wraps the receive functions: packets from a known peer path carry
// that peer's endpoint, and the initiation tie-break is applied. It adds the
// receive function of packets from our relay allocation and one that
// delivers remembered initiations again.
func (p *peerBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := p.socket().Open(port)
	if err != nil {
		return nil, 0, err
	}
	for i, fn := range fns {
		fns[i] = p.receive(fn)
	}
	done := make(chan struct{})
	p.doneMu.Lock()
	p.done = done
	p.doneMu.Unlock()
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

// Close closes the socket and ends the extra receive functions.
func (p *peerBind) Close() error {
	p.doneMu.Lock()
	if p.done != nil {
		close(p.done)
		p.done = nil
	}
	p.doneMu.Unlock()
	return p.socket().Close()
}

// receive wraps one of the socket's receive functions. Data packets from a
// known peer path are the fast path: one atomic load per batch and a map
// lookup per packet, no lock. Everything else goes through inbound.
func (p *peerBind) receive(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(packets, sizes, eps)
		if n == 0 {
			return n, err
		}
		ix := p.peers()
		var rx inboundBatch
		for i := range n {
			u, ok := eps[i].(*UDPEndpoint)
			if !ok {
				continue
			}
			src := u.AddrPort()
			b := packets[i][:sizes[i]]
			if e := ix.byAddr[src]; e != nil && msgType(b) == wgMsgData {
				eps[i] = e
				if e.respPending.Load() {
					p.received(e, wgMsgData, p.now())
				}
				continue
			}
			if rx.now.IsZero() {
				rx.now = p.now()
			}
			ep, keep := p.inbound(&rx, ix, b, src)
			if ep != nil {
				eps[i] = ep
			}
			if !keep {
				sizes[i] = 0 // wireguard-go skips empty messages
			}
		}
		p.queueLazy(rx.wants)
		if len(rx.outs) > 0 || p.flushWanted.Load() {
			p.sendOuts(rx.outs)
		}
		if rx.mappedChanged && p.onMapped != nil {
			p.onMapped()
		}
		return n, err
	}
}

// inboundBatch is what the slow path of one received batch collects to act
// on after the batch.
type inboundBatch struct {
	now           time.Time
	outs          []discoOut
	wants         []injected
	mappedChanged bool
}

// inbound handles a packet from our socket that is not data from a known
// peer path. It returns the peer endpoint to hand it to wireguard-go with
// (nil: keep the raw address) and whether to hand it on at all.
func (p *peerBind) inbound(rx *inboundBatch, ix *peerIndex, b []byte, src netip.AddrPort) (*peerEndpoint, bool) {
	if !isWG(b) {
		if len(b) < 4 {
			p.junkShort.Add(1)
			return nil, false
		}
		var changed bool
		rx.outs, changed = p.handleControl(b, src, false, rx.now, rx.outs)
		rx.mappedChanged = rx.mappedChanged || changed
		return nil, false
	}
	e := ix.peerAt(src)
	if e == nil {
		// Not from a peer's path: junk is dropped here and counted
		// (wireguard-go would drop it uncounted, after more work).
		if p.screenWG(b) {
			return nil, false
		}
		e = p.attribute(b, src, false, rx.now)
	}
	if w, ok := p.lazyInit(e, b); ok {
		rx.wants = append(rx.wants, w) // delivered again once the peer is configured
		return nil, false
	}
	if e == nil {
		// Unknown path: wireguard-go roams to the raw address if the
		// sender is a known peer; remember initiations in case it is one
		// we are about to learn of.
		if msgType(b) != wgMsgInitiation {
			p.wgUnknown.Add(1)
			return nil, true
		}
		if p.screenInit(b, src, rx.now) {
			return nil, false
		}
		p.guard.remember(src, b, rx.now)
		return nil, true
	}
	return e, !p.received(e, msgType(b), rx.now)
}

// received tells the guard of a WireGuard message of type typ from e and
// reports whether to drop it (an initiation that loses the tie-break).
func (p *peerBind) received(e *peerEndpoint, typ uint32, now time.Time) (drop bool) {
	if typ == wgMsgData && !e.respPending.Swap(false) {
		return false
	}
	if !p.guard.received(e.key, typ, now) {
		return false
	}
	p.tieDropped.Add(1)
	p.log.Debug("handshake collision: dropping peer's initiation, ours wins", "peer", shortKey(e.key))
	return true
}

// loses reports whether a redelivered initiation from e collides with our
// own unanswered one and must give way (counted).
func (p *peerBind) loses(e *peerEndpoint) bool {
	if !p.guard.loses(e.key, p.now()) {
		return false
	}
	p.tieDropped.Add(1)
	p.log.Debug("handshake collision: dropping peer's initiation, ours wins", "peer", shortKey(e.key))
	return true
}

// handleControl handles a packet that is not WireGuard: disco (from our
// socket or, viaAlloc, from our allocation) or a STUN answer. Anything
// else is dropped and counted. It reports whether our mapped address
// changed.
func (p *peerBind) handleControl(b []byte, src netip.AddrPort, viaAlloc bool, now time.Time, outs []discoOut) ([]discoOut, bool) {
	switch {
	case isDisco(b):
		return p.handleDisco(b, src, viaAlloc, now, outs), false
	case !viaAlloc && stun.IsMessage(b):
		txid, ap, ok := parseSTUNAnswer(b) // outside every lock
		if !ok {
			p.junkRx.Add(1)
			return outs, false
		}
		ours, changed := p.stunAnswer(txid, ap, now)
		if !ours {
			p.junkRx.Add(1)
		}
		return outs, changed
	}
	p.junkRx.Add(1)
	return outs, false
}

// handleDisco opens a disco packet (outside every lock) and hands it to
// the path table. A packet that does not open as a known peer's is
// dropped, counted and never answered.
func (p *peerBind) handleDisco(b []byte, src netip.AddrPort, viaAlloc bool, now time.Time, outs []discoOut) []discoOut {
	if p.disco == nil {
		p.discoBad.Add(1)
		return outs
	}
	sender := discoSender(b)
	shared := p.discoKey(sender)
	if shared == nil {
		p.denyDisco(src, reasonUnknownDisco, now)
		return outs
	}
	m, err := openDisco(b, shared)
	if err != nil {
		p.denyDisco(src, err.Error(), now)
		return outs
	}
	return p.acceptDisco(sender, shared, m, src, viaAlloc, now, outs)
}

// probeLoop runs ticks until ctx ends. Its owner is the Node.
func (p *peerBind) probeLoop(ctx context.Context) {
	t := time.NewTicker(probeTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
		p.tick()
	}
}

// tick advances the path table to now and sends what it returns.
func (p *peerBind) tick() {
	out := p.pathTable.tick(p.now())
	if len(out.callMe) > 0 && p.ownCands != nil {
		own := p.ownCands() // takes locks of its own: outside every lock of ours
		for _, c := range out.callMe {
			pkt := sealDisco(&p.disco.pub, c.shared, discoMsg{kind: discoCallMe, cands: own})
			out.outs = append(out.outs, discoOut{pkt: pkt, to: c.to, viaAlloc: c.viaAlloc})
		}
	}
	p.sendOuts(out.outs)
	if out.pathLost && p.onPathLost != nil {
		p.onPathLost() // has our own NAT mapping moved? check with STUN now
	}
	if p.askProbe != nil {
		for _, name := range out.asks {
			if name != "" {
				p.askProbe(name)
			}
		}
	}
}

// sendOuts sends disco packets; failures are like lost packets. A
// pre-punch (ttl > 0) the socket cannot send with a TTL is skipped: the
// full ping follows prePunchLead later.
func (p *peerBind) sendOuts(outs []discoOut) {
	if p.flushWanted.CompareAndSwap(true, false) {
		defer p.flush() // a peer got its first path: send its parked initiation
	}
	for _, o := range outs {
		if o.viaAlloc {
			if a := p.alloc.Load(); a != nil {
				_ = a.WriteTo(o.pkt, o.to)
			}
			continue
		}
		if o.ttl > 0 {
			_ = p.socket().SendTTL(o.pkt, o.to, o.ttl)
			continue
		}
		_ = p.socket().Send([][]byte{o.pkt}, newUDPEndpoint(o.to))
	}
}

// sendSTUN sends a binding request from our socket to every relay's UDP
// address; the answers (handleControl) are our mapped addresses.
func (p *peerBind) sendSTUN(relays []wire.Relay) {
	for _, o := range p.stunRequests(relays, p.now()) {
		_ = p.socket().Send([][]byte{o.pkt}, newUDPEndpoint(o.to))
	}
}

// shortKey is a log-safe short name of a WireGuard public key.
func shortKey(k [32]byte) string { return hex.EncodeToString(k[:4]) }
