package overlay

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/crypto/nacl/box"

	"github.com/agentnet/agentnet/wire"
)

// Probing: disco pings to every candidate of a peer, from both sides at
// once, and the pongs that make a path usable.
//
// Rounds. A round pings every candidate once. A round starts when a peer
// or its candidates are new, when the coordinator pushes MsgProbe (at its
// DelayMS, the same moment on both sides), when the peer sends
// call-me-maybe, and when the direct path dies; it repeats at ~1 s and
// ~3 s. While no direct path works, only the side with the larger
// WireGuard key (e.wins) keeps going, one round every slowRoundEvery, and
// each time asks the coordinator for a simultaneous probe and sends
// call-me-maybe over the relay, so the other side probes at the same time.
//
// Conntrack clash: on Linux NAT a probe reaching the peer's router before
// the peer has punched out leaves a conntrack entry there, and the peer's
// own outbound packets then get another (random) port. Probing that port
// over and over would keep the entry alive forever; rounds 40 s apart let
// it expire (30 s UDP timeout) between rounds. The next slow round is timed
// from the last quick round, whose pings go on for another prePunchLead,
// and each side's rounds start when the coordinator's MsgProbe or the
// peer's call-me-maybe reaches it: under load the two sides' last pings
// can lie seconds apart. 35 s left 4 s for that and under CI load two
// rounds in a row still met an entry the other side had just refreshed;
// 40 s leaves 9 s. And a ping arriving from an
// unknown source that opens as peer P's is P's new mapping: it becomes a
// candidate (peer-reflexive) and gets a pong at once.
//
// On the path in use a ping goes out every activePingEvery; a direct path
// without a pong for pathTimeout is dead, and the peer falls back to the
// relay while probing again.

// discoKeys is this node's disco key pair (X25519, NaCl box keys).
type discoKeys struct{ pub, priv [32]byte }

func (k *discoKeys) shared(peer [32]byte) *[32]byte {
	var s [32]byte
	box.Precompute(&s, &peer, &k.priv)
	return &s
}

// discoOut is a disco packet to send once peerBind.mu is released.
type discoOut struct {
	pkt      []byte
	to       netip.AddrPort
	viaAlloc bool
	ttl      int // >0: this IP TTL (pre-punch), else the default
}

// stunReq is a STUN binding request sent from our socket to a relay.
type stunReq struct {
	relay string
	at    time.Time
}

const maxPendingPings = 64

const reasonUnknownDisco = "unknown disco key"

// kick wakes the probe loop.
func (p *peerBind) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// probeLoop runs ticks until ctx ends. Its owner is the Node.
func (p *peerBind) probeLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
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

// tick sends what is due: probe rounds, pings to new sources, pings on the
// paths in use; and re-chooses paths (a dead one falls back).
func (p *peerBind) tick() {
	now := p.now()
	var outs []discoOut
	var asks []string
	var callMe []callMeTo
	pathLost := false
	p.mu.Lock()
	if p.disco == nil {
		p.mu.Unlock()
		return
	}
	for _, e := range p.byKey {
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
		if !e.roundAt.IsZero() && !now.Before(e.roundAt) {
			slow := e.round > len(quickRounds)
			outs = p.roundLocked(e, now, outs)
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
			if c.wantPing && !now.Before(c.pingAt) {
				c.wantPing, c.pingAt = false, time.Time{}
				outs = p.pingLocked(e, c.addr, false, now, outs)
			}
		}
		if cur != nil && now.Sub(e.lastActivePing) >= activePingEvery {
			e.lastActivePing = now
			to := cur.addr
			if cur.kind == kindDirect || cur.viaAlloc || len(e.relayed) == 0 {
				outs = p.pingLocked(e, to, cur.viaAlloc, now, outs)
			} else {
				outs = p.pingLocked(e, e.relayed[0], false, now, outs)
			}
		}
		p.chooseLocked(e, now)
		np := e.path.Load()
		isDirect := np != nil && np.kind == kindDirect && np.verified
		if wasDirect && !isDirect {
			p.startRoundLocked(e, now, true)
			e.reason = fmt.Sprintf("direct path %s stopped answering; probing again", cur.addr)
			p.log.Info("peer path lost", "peer", e.logName(), "endpoint", cur.addr, "reason", "no pong for "+pathTimeout.String())
			pathLost = true
		}
		if isDirect && e.round > len(quickRounds) {
			e.roundAt = time.Time{} // direct works: no slow rounds
		}
		if e.wantAsk {
			e.wantAsk = false
			if !isDirect && np != nil && np.kind == kindRelay {
				asks = append(asks, e.name)
				if rp := p.relayPathLocked(e); rp != nil {
					callMe = append(callMe, callMeTo{shared: e.disco, to: rp.addr, viaAlloc: rp.viaAlloc})
				}
			}
		}
	}
	p.mu.Unlock()
	if len(callMe) > 0 && p.ownCands != nil {
		own := p.ownCands() // takes locks of its own: outside mu
		for _, c := range callMe {
			pkt := sealDisco(&p.disco.pub, c.shared, discoMsg{kind: discoCallMe, cands: own})
			outs = append(outs, discoOut{pkt: pkt, to: c.to, viaAlloc: c.viaAlloc})
		}
	}
	p.sendOuts(outs)
	if pathLost && p.onPathLost != nil {
		p.onPathLost() // has our own NAT mapping moved? check with STUN now
	}
	if p.askProbe != nil {
		for _, name := range asks {
			if name != "" {
				p.askProbe(name)
			}
		}
	}
}

// startRoundLocked starts probe rounds now; ask: also ask the peer (via
// coordinator and relay) to probe at the same time.
func (p *peerBind) startRoundLocked(e *peerEndpoint, now time.Time, ask bool) {
	if e.disco == nil {
		return
	}
	e.round, e.roundStart, e.roundAt = 0, now, now
	if ask {
		e.wantAsk = true
	}
	p.kick()
}

// probeAt schedules a round towards peer k at now+delay (MsgProbe), after
// merging the candidates the probe carries. Stale generations are ignored.
func (p *peerBind) probeAt(k [32]byte, endpoints, relayed []netip.AddrPort, delay time.Duration, gen uint64) bool {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byKey[k]
	if e == nil || e.disco == nil || (gen != 0 && gen <= e.probeGen) {
		return false
	}
	e.probeGen = gen
	for _, ap := range endpoints {
		if ap.IsValid() && e.cands[ap] == nil {
			p.learnLocked(e, ap, "probe", now).wantPing = false
		}
	}
	for _, ap := range relayed {
		if ap.IsValid() && e.cands[ap] == nil {
			c := p.learnLocked(e, ap, "probe", now)
			c.relay, c.wantPing = true, false
		}
	}
	at := now.Add(delay)
	e.round, e.roundStart, e.roundAt = 0, at, at
	return true
}

func (p *peerBind) udpBlocked() bool {
	a := p.alloc.Load()
	return a != nil && a.Transport() != wire.TransportUDP
}

// Pre-punching. A full-TTL ping that reaches the peer's NAT before the
// peer has sent anything to us is not just lost: Linux conntrack keeps an
// unreplied entry for it there (refreshed by every further ping), and the
// peer's own packets to us then leave with another, random public port
// that our NAT drops (the conntrack clash; Nebula stays relayed for good
// in exactly this case). So a round first sends every direct candidate a
// ping with TTL prePunchTTL, which opens our own NAT's mapping towards it
// but expires in the network before the peer's NAT, and sends the full
// ping prePunchLead later. The peer does the same at the same moment (map
// push, MsgProbe, call-me-maybe), so each side's full ping finds the other
// NAT already expecting it. A candidate on our own LAN answers the
// pre-punch itself. TTL 2 passes one NAT (the host's own router); behind
// nested NATs the pre-punch dies too early and the slow rounds (40 s apart,
// longer than the 30 s UDP conntrack timeout) still get through.
const (
	prePunchTTL  = 2
	prePunchLead = time.Second
)

// roundLocked pings every candidate of e once: relayed addresses at once,
// direct ones pre-punched first.
func (p *peerBind) roundLocked(e *peerEndpoint, now time.Time, outs []discoOut) []discoOut {
	blocked := p.udpBlocked()
	for _, c := range e.cands {
		if c.relay && blocked {
			continue // our socket cannot reach the relay
		}
		if p.forceRelay && !c.relay {
			continue
		}
		if c.relay || c.alive(now) {
			outs = p.pingLocked(e, c.addr, false, now, outs)
			continue
		}
		outs = p.pingLocked(e, c.addr, false, now, outs)
		outs[len(outs)-1].ttl = prePunchTTL
		c.wantPing, c.pingAt = true, now.Add(prePunchLead)
	}
	if blocked && len(e.relayed) > 0 {
		if e.allocSrc.IsValid() {
			outs = p.pingLocked(e, e.allocSrc, true, now, outs)
		} else {
			for _, ap := range e.endpoints {
				outs = p.pingLocked(e, ap, true, now, outs)
			}
		}
	}
	return outs
}

// pingLocked appends a ping to e at to (through our allocation if
// viaAlloc) and remembers it for its pong.
func (p *peerBind) pingLocked(e *peerEndpoint, to netip.AddrPort, viaAlloc bool, now time.Time, outs []discoOut) []discoOut {
	if len(e.pings) >= maxPendingPings {
		return outs
	}
	id := newTxID()
	e.pings[id] = sentPing{to: to, viaAlloc: viaAlloc, at: now}
	if c := e.cands[to]; c != nil && !viaAlloc {
		c.lastPing = now
		if c.unanswered.IsZero() {
			c.unanswered = now
		}
	}
	p.probesSent.Add(1)
	pkt := sealDisco(&p.disco.pub, e.disco, discoMsg{kind: discoPing, txid: id, wgKey: p.self})
	return append(outs, discoOut{pkt: pkt, to: to, viaAlloc: viaAlloc})
}

// callMeTo is a call-me-maybe to send: our candidates to a peer over its
// relay path, asking it to probe them now.
type callMeTo struct {
	shared   *[32]byte
	to       netip.AddrPort
	viaAlloc bool
}

// sendOuts sends disco packets; failures are like lost packets.
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
		if p.blockedDirect(o.to) {
			continue
		}
		if o.ttl > 0 {
			_ = p.Bind.SendTTL(o.pkt, o.to, o.ttl)
			continue
		}
		_ = p.Bind.Send([][]byte{o.pkt}, newUDPEndpoint(o.to))
	}
}

// handleControlLocked handles a packet that is not WireGuard: disco (from
// our socket or, viaAlloc, from our allocation) or a STUN answer. Anything
// else is dropped and counted.
func (p *peerBind) handleControlLocked(b []byte, src netip.AddrPort, viaAlloc bool, now time.Time, outs []discoOut) ([]discoOut, bool) {
	switch {
	case isDisco(b):
		return p.handleDiscoLocked(b, src, viaAlloc, now, outs), false
	case !viaAlloc && stun.IsMessage(b):
		return outs, p.handleSTUNLocked(b, src, now)
	}
	p.junkRx.Add(1)
	return outs, false
}

// handleDiscoLocked opens a disco packet and acts on it. A packet that does
// not open as a known peer's is dropped, counted and never answered.
func (p *peerBind) handleDiscoLocked(b []byte, src netip.AddrPort, viaAlloc bool, now time.Time, outs []discoOut) []discoOut {
	if p.disco == nil {
		p.discoBad.Add(1)
		return outs
	}
	e := p.byDisco[discoSender(b)]
	if e == nil || e.disco == nil {
		p.denyDisco(src, reasonUnknownDisco)
		return outs
	}
	m, err := openDisco(b, e.disco)
	if err != nil {
		p.denyDisco(src, err.Error())
		return outs
	}
	switch m.kind {
	case discoPing:
		if m.wgKey != e.key {
			p.denyDisco(src, "ping names another WireGuard key")
			return outs
		}
		p.discoRx.Add(1)
		if viaAlloc {
			if e.allocSrc != src {
				if p.byAddr[e.allocSrc] == e {
					delete(p.byAddr, e.allocSrc)
				}
				e.allocSrc = src
				p.byAddr[src] = e
			}
		} else if e.cands[src] == nil {
			// Peer-reflexive: the peer's mapping towards us. Verify it with
			// our own ping; the path only moves on its pong.
			p.learnLocked(e, src, "reflexive", now)
		}
		pong := sealDisco(&p.disco.pub, e.disco, discoMsg{kind: discoPong, txid: m.txid, addr: src})
		return append(outs, discoOut{pkt: pong, to: src, viaAlloc: viaAlloc})
	case discoPong:
		s, ok := e.pings[m.txid]
		if !ok || s.to != src || s.viaAlloc != viaAlloc {
			p.denyDisco(src, "pong for no ping of ours on this path")
			return outs
		}
		p.discoRx.Add(1)
		delete(e.pings, m.txid)
		p.pongsRecv.Add(1)
		rtt := now.Sub(s.at)
		if viaAlloc {
			if e.allocPong.IsZero() {
				p.resendInitLocked(e, now) // the path works both ways now
			}
			e.allocSrc, e.allocPong, e.allocRTT = src, now, rtt
			p.byAddr[src] = e
		} else if c := e.cands[src]; c != nil {
			if c.lastPong.IsZero() {
				p.resendInitLocked(e, now) // first answer on this path: permissions and mappings exist now
			}
			c.lastPong, c.rtt, c.unanswered = now, rtt, time.Time{}
		}
		p.chooseLocked(e, now)
	case discoCallMe:
		p.discoRx.Add(1)
		for _, ap := range m.cands {
			if e.cands[ap] == nil {
				p.learnLocked(e, ap, "call-me-maybe", now).wantPing = false
			}
		}
		p.startRoundLocked(e, now, false)
	}
	return outs
}

// denyDisco counts a dropped disco packet and logs it at most once per
// source and reason per minute.
func (p *peerBind) denyDisco(src netip.AddrPort, reason string) {
	p.discoBad.Add(1)
	key := src.String() + "|" + reason
	now := p.now()
	if t, ok := p.denied[key]; ok && now.Sub(t) < time.Minute {
		return
	}
	if len(p.denied) > 256 {
		clear(p.denied)
	}
	p.denied[key] = now
	level := slog.LevelWarn
	if reason == reasonUnknownDisco {
		level = slog.LevelDebug // common while a new peer's map is on its way
	}
	p.log.Log(context.Background(), level, "dropped disco packet", "endpoint", src, "reason", reason)
}

// recordIndexLocked remembers the sender index of a handshake message we
// send to e (initiation and response both carry it at bytes 4..8,
// WireGuard paper §5.4.2-5.4.3), so packets for that session from an
// unknown source can be attributed to e.
func (p *peerBind) recordIndexLocked(e *peerEndpoint, b []byte) {
	if len(b) < 8 {
		return
	}
	idx := binary.LittleEndian.Uint32(b[4:8])
	slot := e.idxN % len(e.idx)
	if old := e.idx[slot]; old != 0 && p.byIndex[old] == e {
		delete(p.byIndex, old)
	}
	e.idx[slot] = idx
	e.idxN++
	p.byIndex[idx] = e
}

// attributeLocked names the peer of a WireGuard packet from an unknown
// source by its receiver index (response: bytes 8..12; cookie reply and
// transport data: bytes 4..8). The source becomes a candidate to verify
// with a ping; a spoofed packet therefore cannot move a path, and
// wireguard-go authenticates the packet itself.
func (p *peerBind) attributeLocked(b []byte, src netip.AddrPort, viaAlloc bool, now time.Time) *peerEndpoint {
	var idx uint32
	switch msgType(b) {
	case wgMsgResponse:
		if len(b) < 12 {
			return nil
		}
		idx = binary.LittleEndian.Uint32(b[8:12])
	case wgMsgCookie, wgMsgData:
		if len(b) < 8 {
			return nil
		}
		idx = binary.LittleEndian.Uint32(b[4:8])
	default:
		return nil
	}
	e := p.byIndex[idx]
	if e == nil {
		return nil
	}
	p.indexAttributed.Add(1)
	if !viaAlloc && e.disco != nil && e.cands[src] == nil {
		p.log.Debug("packet from a new source attributed by session index; verifying", "peer", e.logName(), "endpoint", src)
		p.learnLocked(e, src, "index", now)
	}
	return e
}

// isWG reports whether b looks like a WireGuard message: type 1..4 in a
// little-endian uint32 whose upper three bytes are zero.
func isWG(b []byte) bool {
	return len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0
}

// sendSTUN sends a binding request from our socket to every relay's UDP
// address; the answers (handleSTUNLocked) are our mapped addresses.
func (p *peerBind) sendSTUN(relays []wire.Relay) {
	now := p.now()
	for _, r := range relays {
		for _, a := range r.Addrs {
			if a.Transport != wire.TransportUDP {
				continue
			}
			msg, err := stun.Build(stun.TransactionID, stun.BindingRequest)
			if err != nil {
				continue
			}
			p.mu.Lock()
			for id, q := range p.stunTx {
				if now.Sub(q.at) > pingExpiry {
					delete(p.stunTx, id)
				}
			}
			p.stunTx[msg.TransactionID] = stunReq{relay: r.Name, at: now}
			p.mu.Unlock()
			_ = p.Bind.Send([][]byte{msg.Raw}, newUDPEndpoint(a.Addr))
		}
	}
}

// handleSTUNLocked takes a binding answer to one of our requests; it
// reports whether our mapped address changed.
func (p *peerBind) handleSTUNLocked(b []byte, src netip.AddrPort, now time.Time) bool {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		p.junkRx.Add(1)
		return false
	}
	req, ok := p.stunTx[m.TransactionID]
	if !ok || m.Type != stun.BindingSuccess {
		p.junkRx.Add(1)
		return false
	}
	delete(p.stunTx, m.TransactionID)
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		p.junkRx.Add(1)
		return false
	}
	ip, ok := netip.AddrFromSlice(xa.IP)
	if !ok {
		return false
	}
	ap := netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port))
	p.stunAt = now
	if p.mapped[req.relay] == ap {
		return false
	}
	p.log.Info("mapped address", "relay", req.relay, "endpoint", ap)
	p.mapped[req.relay] = ap
	return true
}

// mappedAddrs returns our addresses as the relays see them (STUN).
func (p *peerBind) mappedAddrs() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []netip.AddrPort
	for _, ap := range p.mapped {
		out = append(out, ap)
	}
	return out
}
