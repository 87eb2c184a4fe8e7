package overlay

import (
	"context"
	"encoding/binary"
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

// discoOut is a disco packet the path table wants sent; peerBind sends it
// (sendOuts) outside every lock.
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

const reasonUnknownDisco = "unknown disco key"

// startRoundLocked starts probe rounds now; ask: also ask the peer (via
// coordinator and relay) to probe at the same time.
func (t *pathTable) startRoundLocked(e *peerEndpoint, now time.Time, ask bool) {
	if e.disco == nil {
		return
	}
	e.round, e.roundStart, e.roundAt = 0, now, now
	if ask {
		e.wantAsk = true
	}
	t.kick()
}

// probeAt schedules a round towards peer k at now+delay (MsgProbe), after
// merging the candidates the probe carries. Stale generations are ignored.
func (t *pathTable) probeAt(k [32]byte, endpoints, relayed []netip.AddrPort, delay time.Duration, gen uint64) bool {
	now := t.now()
	t.mu.Lock()
	defer t.unlock()
	e := t.byKey[k]
	if e == nil || e.disco == nil || (gen != 0 && gen <= e.probeGen) {
		return false
	}
	e.probeGen = gen
	for _, ap := range endpoints {
		if ap.IsValid() && e.cands[ap] == nil {
			t.learnLocked(e, ap, "probe", now).wantPing = false
		}
	}
	for _, ap := range relayed {
		if ap.IsValid() && e.cands[ap] == nil {
			c := t.learnLocked(e, ap, "probe", now)
			c.relay, c.wantPing = true, false
		}
	}
	at := now.Add(delay)
	e.round, e.roundStart, e.roundAt = 0, at, at
	return true
}

func (t *pathTable) udpBlocked() bool {
	return t.ainfo.ok && t.ainfo.transport != wire.TransportUDP
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
// prePunchTTL and prePunchLead are in constants.go.

// roundLocked pings every candidate of e once: relayed addresses at once,
// direct ones pre-punched first.
func (t *pathTable) roundLocked(e *peerEndpoint, now time.Time, outs []discoOut) []discoOut {
	blocked := t.udpBlocked()
	for _, c := range e.cands {
		if c.relay && blocked {
			continue // our socket cannot reach the relay
		}
		if t.forceRelay && !c.relay {
			continue
		}
		if c.relay || c.alive(now) {
			outs = t.pingLocked(e, c.addr, false, now, outs)
			continue
		}
		n := len(outs)
		outs = t.pingLocked(e, c.addr, false, now, outs)
		if len(outs) == n {
			continue // maxPendingPings unanswered: nothing was sent
		}
		outs[n].ttl = prePunchTTL
		c.wantPing, c.pingAt = true, now.Add(prePunchLead)
	}
	if blocked && len(e.relayed) > 0 {
		if e.allocSrc.IsValid() {
			outs = t.pingLocked(e, e.allocSrc, true, now, outs)
		} else {
			for _, ap := range e.endpoints {
				outs = t.pingLocked(e, ap, true, now, outs)
			}
		}
	}
	return outs
}

// pingLocked appends a ping to e at to (through our allocation if
// viaAlloc) and remembers it for its pong.
func (t *pathTable) pingLocked(e *peerEndpoint, to netip.AddrPort, viaAlloc bool, now time.Time, outs []discoOut) []discoOut {
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
	t.probesSent.Add(1)
	pkt := sealDisco(&t.disco.pub, e.disco, discoMsg{kind: discoPing, txid: id, wgKey: t.self})
	return append(outs, discoOut{pkt: pkt, to: to, viaAlloc: viaAlloc})
}

// discoKey returns the shared box key of the peer whose disco public key
// is sender, nil if none. The key is immutable (a new one replaces it), so
// the caller opens the packet with it without holding mu.
func (t *pathTable) discoKey(sender [32]byte) *[32]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byDisco[sender]; e != nil {
		return e.disco
	}
	return nil
}

// acceptDisco acts on m, a disco message that opened with shared, the key
// of the peer whose disco public key is sender; src is where it came from
// (viaAlloc: from our allocation). It returns the packets to send (a pong)
// appended to outs. A sender whose key changed meanwhile is stale: dropped.
func (t *pathTable) acceptDisco(sender [32]byte, shared *[32]byte, m discoMsg, src netip.AddrPort, viaAlloc bool, now time.Time, outs []discoOut) []discoOut {
	t.mu.Lock()
	defer t.unlock()
	e := t.byDisco[sender]
	if e == nil || e.disco != shared {
		t.denyLocked(src, "disco key changed", now)
		return outs
	}
	switch m.kind {
	case discoPing:
		if m.wgKey != e.key {
			t.denyLocked(src, "ping names another WireGuard key", now)
			return outs
		}
		t.discoRx.Add(1)
		if viaAlloc {
			if e.allocSrc != src {
				if t.byAddr[e.allocSrc] == e {
					delete(t.byAddr, e.allocSrc)
				}
				e.allocSrc = src
				t.byAddr[src] = e
				t.indexDirty = true
			}
		} else if e.cands[src] == nil {
			// Peer-reflexive: the peer's mapping towards us. Verify it with
			// our own ping; the path only moves on its pong.
			t.learnLocked(e, src, "reflexive", now)
		}
		pong := sealDisco(&t.disco.pub, e.disco, discoMsg{kind: discoPong, txid: m.txid, addr: src})
		return append(outs, discoOut{pkt: pong, to: src, viaAlloc: viaAlloc})
	case discoPong:
		s, ok := e.pings[m.txid]
		if !ok || s.to != src || s.viaAlloc != viaAlloc {
			t.denyLocked(src, "pong for no ping of ours on this path", now)
			return outs
		}
		t.discoRx.Add(1)
		delete(e.pings, m.txid)
		t.pongsRecv.Add(1)
		rtt := now.Sub(s.at)
		if viaAlloc {
			if e.allocPong.IsZero() {
				t.resendLocked(e, now) // the path works both ways now
			}
			e.allocSrc, e.allocPong, e.allocRTT = src, now, rtt
			if t.byAddr[src] != e {
				t.byAddr[src] = e
				t.indexDirty = true
			}
		} else if c := e.cands[src]; c != nil {
			if c.lastPong.IsZero() {
				t.resendLocked(e, now) // first answer on this path: permissions and mappings exist now
			}
			c.lastPong, c.rtt, c.unanswered = now, rtt, time.Time{}
		}
		t.chooseLocked(e, now)
	case discoCallMe:
		t.discoRx.Add(1)
		for _, ap := range m.cands {
			if e.cands[ap] == nil {
				t.learnLocked(e, ap, "call-me-maybe", now).wantPing = false
			}
		}
		t.startRoundLocked(e, now, false)
	}
	return outs
}

// denyDisco counts a dropped disco packet and logs it at most once per
// source and reason per minute.
func (t *pathTable) denyDisco(src netip.AddrPort, reason string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.denyLocked(src, reason, now)
}

func (t *pathTable) denyLocked(src netip.AddrPort, reason string, now time.Time) {
	t.discoBad.Add(1)
	key := src.String() + "|" + reason
	if at, ok := t.denied[key]; ok && now.Sub(at) < time.Minute {
		return
	}
	if len(t.denied) > 256 {
		clear(t.denied)
	}
	t.denied[key] = now
	level := slog.LevelWarn
	if reason == reasonUnknownDisco {
		level = slog.LevelDebug // common while a new peer's map is on its way
	}
	t.log.Log(context.Background(), level, "dropped disco packet", "endpoint", src, "reason", reason)
}

// recordIndex remembers the sender index of a handshake message we send to
// e (initiation and response both carry it at bytes 4..8, WireGuard paper
// §5.4.2-5.4.3), so packets for that session from an unknown source can be
// attributed to e.
func (t *pathTable) recordIndex(e *peerEndpoint, b []byte) {
	if len(b) < 8 {
		return
	}
	idx := binary.LittleEndian.Uint32(b[4:8])
	t.mu.Lock()
	defer t.mu.Unlock()
	slot := e.idxN % len(e.idx)
	if old := e.idx[slot]; old != 0 && t.byIndex[old] == e {
		delete(t.byIndex, old)
	}
	e.idx[slot] = idx
	e.idxN++
	t.byIndex[idx] = e
}

// attribute names the peer of a WireGuard packet from an unknown source by
// its receiver index (response: bytes 8..12; cookie reply and transport
// data: bytes 4..8). The source becomes a candidate to verify with a ping;
// a spoofed packet therefore cannot move a path, and wireguard-go
// authenticates the packet itself.
func (t *pathTable) attribute(b []byte, src netip.AddrPort, viaAlloc bool, now time.Time) *peerEndpoint {
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
	t.mu.Lock()
	defer t.unlock()
	e := t.byIndex[idx]
	if e == nil {
		return nil
	}
	t.indexAttributed.Add(1)
	if !viaAlloc && e.disco != nil && e.cands[src] == nil {
		t.log.Debug("packet from a new source attributed by session index; verifying", "peer", e.logName(), "endpoint", src)
		t.learnLocked(e, src, "index", now)
	}
	return e
}

// isWG reports whether b looks like a WireGuard message: type 1..4 in a
// little-endian uint32 whose upper three bytes are zero.
func isWG(b []byte) bool {
	return len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0
}

// stunOut is a STUN binding request to send from our socket.
type stunOut struct {
	pkt []byte
	to  netip.AddrPort
}

// stunRequests builds a binding request to every relay's UDP address and
// remembers them; the answers (stunAnswer) are our mapped addresses.
func (t *pathTable) stunRequests(relays []wire.Relay, now time.Time) []stunOut {
	var out []stunOut
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, q := range t.stunTx {
		if now.Sub(q.at) > pingExpiry {
			delete(t.stunTx, id)
		}
	}
	for _, r := range relays {
		for _, a := range r.Addrs {
			if a.Transport != wire.TransportUDP {
				continue
			}
			msg, err := stun.Build(stun.TransactionID, stun.BindingRequest)
			if err != nil {
				continue
			}
			t.stunTx[msg.TransactionID] = stunReq{relay: r.Name, at: now}
			out = append(out, stunOut{pkt: msg.Raw, to: a.Addr})
		}
	}
	return out
}

// parseSTUNAnswer decodes a binding success answer: its transaction and
// the mapped address it reports. It takes no lock.
func parseSTUNAnswer(b []byte) (txid [12]byte, mapped netip.AddrPort, ok bool) {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
		return txid, mapped, false
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		return txid, mapped, false
	}
	ip, ok := netip.AddrFromSlice(xa.IP)
	if !ok {
		return txid, mapped, false
	}
	return m.TransactionID, netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), true
}

// stunAnswer takes a parsed binding answer (parseSTUNAnswer); it reports
// whether it answered one of our requests and whether our mapped address
// changed.
func (t *pathTable) stunAnswer(txid [12]byte, ap netip.AddrPort, now time.Time) (ours, changed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	req, ok := t.stunTx[txid]
	if !ok {
		return false, false
	}
	delete(t.stunTx, txid)
	t.stunAt = now
	if t.mapped[req.relay] == ap {
		return true, false
	}
	t.log.Info("mapped address", "relay", req.relay, "endpoint", ap)
	t.mapped[req.relay] = ap
	return true, true
}

// mappedAddrs returns our addresses as the relays see them (STUN).
func (t *pathTable) mappedAddrs() []netip.AddrPort {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []netip.AddrPort
	for _, ap := range t.mapped {
		out = append(out, ap)
	}
	return out
}
