package overlay

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// pathTable is the part of peerBind that knows where each peer can be
// reached: its candidates (map endpoints, relayed addresses, sources learnt
// from the wire), the path its packets take now (paths.go: choice), and the
// probe schedule (probe.go: rounds, pings, pongs). It owns no socket: the
// schedule is a state machine that tick(now) advances and that returns the
// packets to send; the disco and STUN handlers return theirs the same way,
// and peerBind sends them.
//
// It also publishes peerIndex, the address → peer table the receive path
// reads without a lock: an immutable snapshot, replaced (copy on write)
// whenever a locked section changed byAddr or byKey.
//
// Concurrency: mu guards the fields below it and every peerEndpoint's path
// fields; a peer's current path is also published in peerEndpoint.path
// (atomic, immutable *path) for the send path. Lock order: mu before
// handshakeGuard.mu. Nothing here does I/O, opens a box or parses STUN
// under mu (it only seals our own pings and pongs there).
type pathTable struct {
	log   *slog.Logger
	now   func() time.Time // the injected clock, for calls that carry no now
	guard *handshakeGuard  // told of path changes (pathArrived, pathMoved)

	// Set before use, then read-only.
	disco      *discoKeys // nil: no path discovery (peers get their first endpoint)
	forceRelay bool       // Config.ForceRelay: never choose or probe a direct path

	wake        chan struct{} // asks for a tick soon (kick); bounded
	index       atomic.Pointer[peerIndex]
	flushWanted atomic.Bool // the guard has handshake messages to flush (peerBind.flush)
	pathCounters

	mu         sync.Mutex // guards the fields below and peerEndpoint path fields
	self       [32]byte   // our WireGuard public key (pings carry it)
	ainfo      allocInfo  // our relay allocation, as path choice needs it
	byKey      map[[32]byte]*peerEndpoint
	byAddr     map[netip.AddrPort]*peerEndpoint // every candidate address → peer
	byDisco    map[[32]byte]*peerEndpoint
	byIndex    map[uint32]*peerEndpoint // our handshake sender indexes → peer
	indexDirty bool                     // byKey or byAddr changed: publish on unlock
	relays     []wire.Relay
	stunTx     map[[12]byte]stunReq
	mapped     map[string]netip.AddrPort // relay name → our address as it sees us
	stunAt     time.Time                 // last STUN answer
	denied     map[string]time.Time      // disco denial log limiter
}

// pathCounters count path discovery events (Status.Paths).
type pathCounters struct {
	probesSent      atomic.Uint64 // disco pings sent
	pongsRecv       atomic.Uint64 // disco pings answered
	discoRx         atomic.Uint64 // disco messages accepted
	discoBad        atomic.Uint64 // disco messages dropped (do not open, unknown sender, stale)
	junkRx          atomic.Uint64 // packets neither WireGuard, disco nor an expected STUN answer
	pathSwitches    atomic.Uint64 // path changes of any peer
	indexAttributed atomic.Uint64 // packets from unknown sources named by receiver index
}

// allocInfo is what path choice needs of our relay allocation.
type allocInfo struct {
	ok        bool
	relay     string // relay name
	transport string // udp, tcp or tls
}

// peerIndex is the immutable snapshot of the peer tables that the receive
// and send paths read lock-free. Never modify one after publishing it.
type peerIndex struct {
	byAddr map[netip.AddrPort]*peerEndpoint
	byKey  map[[32]byte]*peerEndpoint
}

// peerAt returns the peer whose candidate (or allocation source) ap is.
func (ix *peerIndex) peerAt(ap netip.AddrPort) *peerEndpoint { return ix.byAddr[ap] }

func newPathTable(self [32]byte, guard *handshakeGuard, now func() time.Time, log *slog.Logger) *pathTable {
	t := &pathTable{log: log, now: now, guard: guard, self: self, wake: make(chan struct{}, 1),
		byKey: map[[32]byte]*peerEndpoint{}, byAddr: map[netip.AddrPort]*peerEndpoint{},
		byDisco: map[[32]byte]*peerEndpoint{}, byIndex: map[uint32]*peerEndpoint{}, stunTx: map[[12]byte]stunReq{},
		mapped: map[string]netip.AddrPort{}, denied: map[string]time.Time{}}
	t.index.Store(&peerIndex{byAddr: map[netip.AddrPort]*peerEndpoint{}, byKey: map[[32]byte]*peerEndpoint{}})
	return t
}

// peers is the current peer index (lock-free).
func (t *pathTable) peers() *peerIndex { return t.index.Load() }

// unlock publishes a new peerIndex if the locked section changed the
// tables, then releases mu. Every locked section that may change byKey or
// byAddr ends with it.
func (t *pathTable) unlock() {
	if t.indexDirty {
		t.indexDirty = false
		ix := &peerIndex{byAddr: make(map[netip.AddrPort]*peerEndpoint, len(t.byAddr)), byKey: make(map[[32]byte]*peerEndpoint, len(t.byKey))}
		for ap, e := range t.byAddr {
			ix.byAddr[ap] = e
		}
		for k, e := range t.byKey {
			ix.byKey[k] = e
		}
		t.index.Store(ix)
	}
	t.mu.Unlock()
}

// endpoint returns peer k's endpoint, made if new.
func (t *pathTable) endpoint(k [32]byte) *peerEndpoint {
	t.mu.Lock()
	defer t.unlock()
	return t.endpointLocked(k)
}

func (t *pathTable) endpointLocked(k [32]byte) *peerEndpoint {
	e := t.byKey[k]
	if e == nil {
		e = &peerEndpoint{key: k, wins: bytes.Compare(t.self[:], k[:]) > 0, pings: map[txID]sentPing{}}
		t.byKey[k] = e
		t.indexDirty = true
	}
	return e
}

// kick asks the probe loop for a tick now.
func (t *pathTable) kick() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// setSelf makes self our key (key rotation): pings carry it, and the
// larger key keeps slow probe rounds going.
func (t *pathTable) setSelf(self [32]byte) {
	t.mu.Lock()
	defer t.unlock()
	t.self = self
	for _, e := range t.byKey {
		e.wins = bytes.Compare(self[:], e.key[:]) > 0
	}
}

// setAlloc records our allocation (ok false: none) and re-chooses paths.
func (t *pathTable) setAlloc(ai allocInfo) {
	now := t.now()
	t.mu.Lock()
	defer t.unlock()
	t.ainfo = ai
	for _, e := range t.byKey {
		t.chooseLocked(e, now)
	}
}

// setRelays sets the relays of the map (for naming paths).
func (t *pathTable) setRelays(rs []wire.Relay) {
	t.mu.Lock()
	t.relays = rs
	t.mu.Unlock()
}

// tickOut is what one tick wants sent and asked for.
type tickOut struct {
	outs     []discoOut
	asks     []string   // peer names to ask the coordinator to probe with us
	callMe   []callMeTo // call-me-maybe to send, with our candidates
	pathLost bool       // a verified direct path died
}

// tick advances the probe schedule to now: probe rounds, pings to new
// sources, pings on the paths in use; and re-chooses paths (a dead one
// falls back). It returns what to send; it sends nothing itself.
func (t *pathTable) tick(now time.Time) tickOut {
	var out tickOut
	t.mu.Lock()
	defer t.unlock()
	if t.disco == nil {
		return out
	}
	for _, e := range t.byKey {
		if e.disco == nil {
			continue
		}
		for id, s := range e.pings {
			if now.Sub(s.at) > pingExpiry {
				delete(e.pings, id)
			}
		}
		cur := e.path.Load()
		wasDirect := cur != nil && cur.kind == kindDirect && cur.verified
		slow := e.round > len(quickRounds)
		if slow && !e.roundAt.IsZero() && !e.punch.lastDirect.IsZero() && now.Before(e.punch.lastDirect.Add(slowRoundEvery)) {
			// A slow round waits for slowRoundEvery of silence since our
			// last full ping to the peer's direct candidates (probe.go).
			e.roundAt = maxTime(e.roundAt, e.punch.lastDirect.Add(slowRoundEvery))
		}
		if !e.roundAt.IsZero() && !now.Before(e.roundAt) {
			out.outs = t.roundLocked(e, now, out.outs)
			e.round++
			e.roundAt = time.Time{}
			switch {
			case e.round <= len(quickRounds):
				e.roundAt = now.Add(quickRounds[e.round-1])
			case e.wins:
				e.roundAt = now.Add(slowRoundEvery)
			}
			// A slow round asks the peer to probe with us (coordinator
			// MsgProbe, call-me-maybe). Only a slow round does: the quick
			// rounds that a MsgProbe starts must not ask again, or the
			// two sides would keep each other probing every few seconds
			// and keep a poisoned conntrack entry alive for good.
			if slow && e.wins {
				e.wantAsk = true
			}
		}
		for _, c := range e.cands {
			if c.gated && t.punchReadyLocked(e, c, now) {
				c.wantPing = true
			}
			if c.wantPing {
				c.wantPing, c.gated = false, false
				out.outs = t.pingLocked(e, c.addr, false, 0, now, out.outs)
			}
		}
		if cur != nil && now.Sub(e.lastActivePing) >= activePingEvery {
			e.lastActivePing = now
			to := cur.addr
			if cur.kind == kindDirect || cur.viaAlloc || len(e.relayed) == 0 {
				out.outs = t.pingLocked(e, to, cur.viaAlloc, 0, now, out.outs)
			} else {
				out.outs = t.pingLocked(e, e.relayed[0], false, 0, now, out.outs)
			}
		}
		t.chooseLocked(e, now)
		np := e.path.Load()
		isDirect := np != nil && np.kind == kindDirect && np.verified
		if wasDirect && !isDirect {
			t.startRoundLocked(e, now, true)
			e.reason = fmt.Sprintf("direct path %s stopped answering; probing again", cur.addr)
			t.log.Info("peer path lost", "peer", e.logName(), "endpoint", cur.addr, "reason", "no pong for "+pathTimeout.String())
			out.pathLost = true
		}
		if isDirect && e.round > len(quickRounds) {
			e.roundAt = time.Time{} // direct works: no slow rounds
		}
		if e.wantAsk {
			e.wantAsk = false
			if !isDirect && np != nil && np.kind == kindRelay {
				out.asks = append(out.asks, e.name)
				if rp := t.relayPathLocked(e); rp != nil {
					out.callMe = append(out.callMe, callMeTo{shared: e.disco, to: rp.addr, viaAlloc: rp.viaAlloc})
				}
			}
		}
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// callMeTo is a call-me-maybe to send: our candidates to a peer over its
// relay path, asking it to probe them now.
type callMeTo struct {
	shared   *[32]byte
	to       netip.AddrPort
	viaAlloc bool
}

// peerIPs returns the IPs of every peer's direct candidates.
func (t *pathTable) peerIPs() []netip.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, e := range t.byKey {
		for ap, c := range e.cands {
			if !c.relay && !seen[ap.Addr()] {
				seen[ap.Addr()] = true
				out = append(out, ap.Addr())
			}
		}
	}
	return out
}
