package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// This file is path choice in the pathTable (pathtable.go): which candidates a peer has, which
// one its packets use now, and why. Probing (probe.go) feeds it pongs; the
// data path only ever loads peerEndpoint.path, an immutable *path.
//
// Choice, in order: the direct candidate with the lowest RTT whose last
// pong is younger than pathTimeout (a new one must beat the current by 20%
// to take over); else the relay (the peer's relayed address, from our
// socket; or through our own TCP/TLS allocation when UDP to the relay is
// blocked), used as soon as it exists without waiting for a pong; else the
// peer's first published endpoint, unverified (peers without disco keys,
// and networks without relays, keep working as before).

// path is where a peer's packets go now. Immutable once published.
type path struct {
	kind      pathKind
	addr      netip.AddrPort // destination of our packets
	ep        *UDPEndpoint   // addr for our UDP socket (nil when viaAlloc)
	viaAlloc  bool           // sent through our own relay allocation
	relay     string         // relay name (kind relay)
	transport string         // how packets leave us: udp, tcp or tls
	verified  bool           // a pong came back on this path
}

type pathKind uint8

const (
	kindDirect pathKind = iota + 1
	kindRelay
)

func (k pathKind) String() string {
	switch k {
	case kindDirect:
		return "direct"
	case kindRelay:
		return "relay"
	}
	return "none"
}

func directPath(ap netip.AddrPort, verified bool) *path {
	return &path{kind: kindDirect, addr: ap, ep: newUDPEndpoint(ap), transport: wire.TransportUDP, verified: verified}
}

// quickRounds are the delays after a probe round starts at which it is
// repeated (0, ~1, ~3 s); later rounds are slowRoundEvery apart.
var quickRounds = []time.Duration{time.Second, 2 * time.Second}

// candidate is one address a peer may be reached at.
type candidate struct {
	addr       netip.AddrPort
	relay      bool   // the peer's relayed address
	source     string // "map", "probe", "call-me-maybe", "reflexive", "index"
	lastPing   time.Time
	lastPong   time.Time
	unanswered time.Time // first ping since the last pong; zero when answered
	rtt        time.Duration
	wantPing   bool      // ping at the next tick (a new source to verify, or a pre-punch agreed)
	gated      bool      // pre-punched; its full ping waits for the peer's (probe.go: punchReadyLocked)
	punchedAt  time.Time // the first pre-punch the gate waits on
	pingRecv   time.Time // the peer's last ping from here
	added      time.Time
}

func (c *candidate) alive(now time.Time) bool {
	return !c.lastPong.IsZero() && now.Sub(c.lastPong) < pathTimeout
}

// sentPing is a ping waiting for its pong.
type sentPing struct {
	to       netip.AddrPort
	viaAlloc bool
	at       time.Time
}

// peerInfo is what the network map says about a peer's paths.
type peerInfo struct {
	key       [32]byte
	name      string
	disco     [32]byte
	hasDisco  bool
	endpoints []netip.AddrPort
	relayed   []netip.AddrPort
}

// setPeers is setPeerInfo for peers that only have one known endpoint (or
// none: the zero AddrPort), without disco.
func (t *pathTable) setPeers(paths map[[32]byte]netip.AddrPort) {
	infos := make([]peerInfo, 0, len(paths))
	for k, ap := range paths {
		pi := peerInfo{key: k}
		if ap.IsValid() {
			pi.endpoints = []netip.AddrPort{ap}
		}
		infos = append(infos, pi)
	}
	t.setPeerInfo(infos)
}

// setPeerInfo sets every peer's candidates and forgets peers not listed.
// New or changed candidates start a probe round. Call flush once
// wireguard-go knows the same peers.
func (t *pathTable) setPeerInfo(infos []peerInfo) {
	now := t.now()
	t.mu.Lock()
	defer t.unlock()
	keep := make(map[[32]byte]bool, len(infos))
	for _, pi := range infos {
		keep[pi.key] = true
	}
	for k, e := range t.byKey {
		if !keep[k] {
			t.forgetLocked(e)
		}
	}
	for _, pi := range infos {
		e := t.endpointLocked(pi.key)
		e.name = pi.name
		if pi.hasDisco && t.disco != nil && (e.disco == nil || e.discoPub != pi.disco) {
			if e.disco != nil {
				delete(t.byDisco, e.discoPub)
			}
			e.discoPub = pi.disco
			e.disco = t.disco.shared(pi.disco)
			e.punch = punchState{} // a new disco key: a restarted peer
			t.byDisco[pi.disco] = e
		}
		changed := !slices.Equal(e.endpoints, pi.endpoints) || !slices.Equal(e.relayed, pi.relayed)
		e.endpoints, e.relayed = pi.endpoints, pi.relayed
		if changed {
			t.rebuildCandsLocked(e, now)
			t.startRoundLocked(e, now, true)
		}
		t.chooseLocked(e, now)
	}
	t.rebuildAddrsLocked()
}

func (t *pathTable) forgetLocked(e *peerEndpoint) {
	delete(t.byKey, e.key)
	t.indexDirty = true
	t.guard.forget(e.key)
	if e.disco != nil && t.byDisco[e.discoPub] == e {
		delete(t.byDisco, e.discoPub)
	}
	for _, idx := range e.idx {
		if t.byIndex[idx] == e {
			delete(t.byIndex, idx)
		}
	}
}

// rebuildCandsLocked merges the map's candidates with the learned ones.
func (t *pathTable) rebuildCandsLocked(e *peerEndpoint, now time.Time) {
	old := e.cands
	e.cands = make(map[netip.AddrPort]*candidate, len(e.endpoints)+len(e.relayed))
	add := func(ap netip.AddrPort, relay bool, source string) {
		if !ap.IsValid() || e.cands[ap] != nil {
			return
		}
		c := old[ap]
		if c == nil {
			c = &candidate{addr: ap, added: now}
		}
		c.relay, c.source = relay, source
		e.cands[ap] = c
	}
	for _, ap := range e.endpoints {
		add(ap, false, "map")
	}
	for _, ap := range e.relayed {
		add(ap, true, "map")
	}
	for ap, c := range old {
		if c.source != "map" && e.cands[ap] == nil {
			e.cands[ap] = c
		}
	}
}

// learnLocked adds a candidate learnt from the wire (a ping from a new
// source, a call-me-maybe, an attributed WireGuard packet) and asks for a
// ping to verify it. It never moves the path: only a pong does.
func (t *pathTable) learnLocked(e *peerEndpoint, ap netip.AddrPort, source string, now time.Time) *candidate {
	if c := e.cands[ap]; c != nil {
		return c
	}
	if e.cands == nil {
		e.cands = map[netip.AddrPort]*candidate{}
	}
	learned := 0
	var oldest *candidate
	for _, c := range e.cands {
		if c.source != "map" {
			learned++
			if oldest == nil || c.added.Before(oldest.added) {
				oldest = c
			}
		}
	}
	if learned >= maxLearned && oldest != nil {
		delete(e.cands, oldest.addr)
		delete(t.byAddr, oldest.addr)
		t.indexDirty = true
	}
	c := &candidate{addr: ap, source: source, added: now, wantPing: true}
	e.cands[ap] = c
	if t.byAddr[ap] == nil {
		t.byAddr[ap] = e
		t.indexDirty = true
	}
	t.kick()
	return c
}

// rebuildAddrsLocked maps every candidate address (and where a peer's
// packets arrive from on our allocation) to its peer, for attributing
// received packets.
func (t *pathTable) rebuildAddrsLocked() {
	t.byAddr = make(map[netip.AddrPort]*peerEndpoint, len(t.byKey))
	t.indexDirty = true
	for _, e := range t.byKey {
		for ap := range e.cands {
			t.byAddr[ap] = e
		}
		if e.allocSrc.IsValid() {
			t.byAddr[e.allocSrc] = e
		}
	}
}

// chooseLocked picks the peer's path (see the top of this file) and
// publishes it when it changed.
func (t *pathTable) chooseLocked(e *peerEndpoint, now time.Time) {
	var best *candidate
	for _, c := range e.cands {
		if c.relay || !c.alive(now) || t.forceRelay {
			continue
		}
		if best == nil || c.rtt < best.rtt {
			best = c
		}
	}
	cur := e.path.Load()
	if best != nil && cur != nil && cur.kind == kindDirect && cur.verified && cur.addr != best.addr {
		if c := e.cands[cur.addr]; c != nil && c.alive(now) && best.rtt*5/4 >= c.rtt {
			best = c // not better by enough to switch
		}
	}
	var np *path
	switch {
	case best != nil:
		np = directPath(best.addr, true)
		e.reason = ""
	case len(e.relayed) > 0 && t.relayPathLocked(e) != nil:
		np = t.relayPathLocked(e)
		e.reason = t.relayReasonLocked(e, now)
	case len(e.endpoints) > 0 && (e.disco == nil || len(t.relays) == 0):
		// Nothing verified and no relay to fall back on (or a peer that
		// cannot probe): try its first endpoint. With a relay in the map,
		// a peer without a verified path waits for a probe or for its
		// relayed address instead of a guess that may swallow the first
		// handshake (its initiation stays parked until then).
		np = directPath(e.endpoints[0], false)
		e.reason = ""
		if e.disco != nil && e.round > len(quickRounds) {
			e.reason = "no direct probe answered and the peer has no relay address; sending to its first endpoint"
		}
	case len(e.cands) > 0 && e.disco != nil && e.round <= len(quickRounds) && now.Sub(e.roundStart) < 5*time.Second:
		e.reason = "probing direct candidates; the peer has no relay address"
	case len(e.cands) > 0:
		e.reason = fmt.Sprintf("no direct probe answered and the peer has no relay address (candidates: %s)", strings.Join(e.directCands(), ", "))
	default:
		e.reason = "peer has no candidates"
	}
	if samePath(cur, np) {
		return
	}
	if np == nil {
		e.path.Store(nil)
	} else {
		e.path.Store(np)
		if cur == nil && t.guard.pathArrived(e.key) {
			t.flushWanted.Store(true) // its parked initiation can go now
		}
		if cur != nil {
			t.resendLocked(e, now)
		}
	}
	if cur != nil && np != nil && (cur.kind != np.kind || cur.addr != np.addr) {
		t.pathSwitches.Add(1)
	}
	if np != nil {
		t.log.Info("peer path", "peer", e.logName(), "path", np.describe(), "reason", e.reason)
	}
}

// resendLocked tells the guard that e's path moved (or answered for the
// first time): our unanswered handshake messages go out again on it.
func (t *pathTable) resendLocked(e *peerEndpoint, now time.Time) {
	if t.guard.pathMoved(e.key, now) {
		t.flushWanted.Store(true)
	}
}

func samePath(a, b *path) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.kind == b.kind && a.addr == b.addr && a.viaAlloc == b.viaAlloc && a.verified == b.verified && a.relay == b.relay && a.transport == b.transport
}

func (pa *path) describe() string {
	if pa.kind == kindRelay {
		return fmt.Sprintf("relay %s via %s (%s)", pa.relay, pa.transport, pa.addr)
	}
	return "direct " + pa.addr.String()
}

// relayPathLocked is the relay path to e, or nil without one.
func (t *pathTable) relayPathLocked(e *peerEndpoint) *path {
	if len(e.relayed) == 0 {
		return nil
	}
	if a := t.ainfo; a.ok && a.transport != wire.TransportUDP {
		// No UDP to the relay: our allocation sends to where the peer's
		// packets came from on it (or a guess: its published endpoints,
		// one of which is its mapped address on the relay).
		dst := e.allocSrc
		if !dst.IsValid() && len(e.endpoints) > 0 {
			dst = e.endpoints[len(e.endpoints)-1]
		}
		if !dst.IsValid() {
			return nil
		}
		return &path{kind: kindRelay, addr: dst, viaAlloc: true, relay: a.relay, transport: a.transport}
	}
	dst := e.relayed[0]
	return &path{kind: kindRelay, addr: dst, ep: newUDPEndpoint(dst), relay: t.relayNameLocked(dst), transport: wire.TransportUDP}
}

func (t *pathTable) relayNameLocked(relayed netip.AddrPort) string {
	for _, r := range t.relays {
		for _, a := range r.Addrs {
			if a.Addr.Addr() == relayed.Addr() {
				return r.Name
			}
		}
	}
	if len(t.relays) > 0 {
		return t.relays[0].Name
	}
	return "?"
}

func (t *pathTable) relayReasonLocked(e *peerEndpoint, now time.Time) string {
	direct := e.directCands()
	switch {
	case t.forceRelay:
		return "direct paths disabled on this node (--force-relay)"
	case len(direct) == 0:
		return "peer has no direct candidates"
	case t.ainfo.ok && t.ainfo.transport != wire.TransportUDP:
		return "UDP to relay blocked; using " + t.ainfo.transport
	case e.disco == nil:
		return "peer does not probe paths (no disco key)"
	case e.round <= len(quickRounds) && now.Sub(e.roundStart) < 5*time.Second:
		return "probing direct candidates"
	}
	return fmt.Sprintf("no direct probe answered in %d s (candidates: %s)", int(pathTimeout/time.Second), strings.Join(direct, ", "))
}

func (e *peerEndpoint) directCands() []string {
	var out []string
	for ap, c := range e.cands {
		if !c.relay {
			out = append(out, ap.String())
		}
	}
	slices.Sort(out)
	return out
}

func (e *peerEndpoint) logName() string {
	if e.name != "" {
		return e.name
	}
	return shortKey(e.key)
}

// PathStatus describes the path a peer's packets take now (Status, JSON
// names stable).
type PathStatus struct {
	Kind      string   `json:"kind"`                 // "direct" or "relay"
	Transport string   `json:"transport"`            // how our packets leave: "udp", "tcp" or "tls"
	Endpoint  string   `json:"endpoint"`             // ip:port our packets go to
	Relay     string   `json:"relay,omitempty"`      // relay name, kind relay
	RTTms     float64  `json:"rtt_ms"`               // last probe round trip; 0: not measured
	Verified  bool     `json:"verified"`             // a probe was answered on this path
	Reason    string   `json:"reason,omitempty"`     // why not direct
	Candidate []string `json:"candidates,omitempty"` // direct candidates known
}

// pathStatus reports peer k's path, nil without one.
func (t *pathTable) pathStatus(k [32]byte) *PathStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byKey[k]
	if e == nil {
		return nil
	}
	pa := e.path.Load()
	if pa == nil {
		if e.reason == "" {
			return nil
		}
		return &PathStatus{Kind: "none", Reason: e.reason, Candidate: e.directCands()}
	}
	ps := &PathStatus{Kind: pa.kind.String(), Transport: pa.transport, Endpoint: pa.addr.String(), Relay: pa.relay,
		Verified: pa.verified, Reason: e.reason, Candidate: e.directCands()}
	rttAddr := pa.addr
	if pa.kind == kindRelay && !pa.viaAlloc && len(e.relayed) > 0 {
		rttAddr = e.relayed[0]
	}
	if c := e.cands[rttAddr]; c != nil && !c.lastPong.IsZero() {
		ps.RTTms = float64(c.rtt.Microseconds()) / 1000
	}
	return ps
}
