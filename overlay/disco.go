package overlay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/crypto/nacl/box"
)

// Disco messages are agentnet's path-discovery packets. They travel on the
// node's one UDP socket and through relay allocations, next to WireGuard
// packets, and are told apart by their first bytes:
//
//	magic (6) | sender disco public key (32) | nonce (24) | box(message)
//
// The magic starts with 'A' (0x41): a WireGuard message starts with its
// type 1..4 followed by three zero bytes (WireGuard paper §5.4), and a
// STUN message starts with two zero bits (RFC 8489 §5), so neither can be
// mistaken for disco. The message is sealed with NaCl box (X25519,
// XSalsa20-Poly1305) from the sender's disco key to the receiver's; a
// message that does not open is dropped and never answered.
//
// Messages (first byte of the opened box):
//
//	ping        1 | txid (12) | sender WireGuard key (32)
//	pong        2 | txid (12) | observed source ip (16) | port (2)
//	callMeMaybe 3 | n × (ip (16) | port (2)), n ≤ maxCallMeMaybe
//	prePunched  4 | sender WireGuard key (32) | flags (1)
//
// prePunched says "I have pre-punched towards your direct candidates"
// (probe.go); flag bit 0 (punchedReply) marks an answer to the peer's own,
// which is never answered. A node that predates it drops it like any
// message it cannot parse (counted, never answered) and the sender falls
// back to the lead time after its pre-punch.
const discoMagic = "A\x6e\xf0\x9f\x94\x8e" // "An🔎"

const (
	discoHeaderLen = len(discoMagic) + 32 + 24
	discoPing      = 1
	discoPong      = 2
	discoCallMe    = 3
	discoPunched   = 4
	punchedReply   = 1 // prePunched flag: an answer, not to be answered
	discoTxIDLen   = 12
	discoAddrLen   = 18
	maxCallMeMaybe = 16
	// maxDiscoLen bounds what is even tried to open.
	maxDiscoLen = discoHeaderLen + box.Overhead + 1 + maxCallMeMaybe*discoAddrLen
)

type txID [discoTxIDLen]byte

// discoMsg is one decoded disco message.
type discoMsg struct {
	kind  byte
	txid  txID
	wgKey [32]byte         // ping, prePunched: the sender's WireGuard key
	addr  netip.AddrPort   // pong: where the pinger was seen from
	cands []netip.AddrPort // callMeMaybe: the sender's candidates
	reply bool             // prePunched: an answer to ours
}

var errDiscoShort = errors.New("disco: message too short")

// isDisco reports whether b starts like a disco packet.
func isDisco(b []byte) bool {
	return len(b) >= discoHeaderLen && string(b[:len(discoMagic)]) == discoMagic
}

// discoSender returns the sender's disco key of a packet isDisco accepted.
func discoSender(b []byte) (k [32]byte) {
	copy(k[:], b[len(discoMagic):])
	return k
}

// sealDisco builds a disco packet from self (public key selfPub) to the
// holder of the shared key (box.Precompute of their public and our private).
func sealDisco(selfPub *[32]byte, shared *[32]byte, m discoMsg) []byte {
	pt := make([]byte, 0, 1+discoTxIDLen+32)
	pt = append(pt, m.kind)
	switch m.kind {
	case discoPing:
		pt = append(pt, m.txid[:]...)
		pt = append(pt, m.wgKey[:]...)
	case discoPong:
		pt = append(pt, m.txid[:]...)
		pt = appendAddr(pt, m.addr)
	case discoCallMe:
		for i, c := range m.cands {
			if i == maxCallMeMaybe {
				break
			}
			pt = appendAddr(pt, c)
		}
	case discoPunched:
		pt = append(pt, m.wgKey[:]...)
		var flags byte
		if m.reply {
			flags |= punchedReply
		}
		pt = append(pt, flags)
	}
	var nonce [24]byte
	_, _ = rand.Read(nonce[:])
	out := make([]byte, 0, discoHeaderLen+len(pt)+box.Overhead)
	out = append(out, discoMagic...)
	out = append(out, selfPub[:]...)
	out = append(out, nonce[:]...)
	return box.SealAfterPrecomputation(out, pt, &nonce, shared)
}

// openDisco opens a disco packet with the shared key of its claimed sender
// and decodes it. Any error means: drop, count, do not answer.
func openDisco(b []byte, shared *[32]byte) (discoMsg, error) {
	if !isDisco(b) {
		return discoMsg{}, errDiscoShort
	}
	if len(b) > maxDiscoLen {
		return discoMsg{}, errors.New("disco: message too long")
	}
	var nonce [24]byte
	copy(nonce[:], b[len(discoMagic)+32:])
	pt, ok := box.OpenAfterPrecomputation(nil, b[discoHeaderLen:], &nonce, shared)
	if !ok {
		return discoMsg{}, errors.New("disco: message does not open")
	}
	return parseDisco(pt)
}

// parseDisco decodes an opened disco message.
func parseDisco(pt []byte) (discoMsg, error) {
	if len(pt) < 1 {
		return discoMsg{}, errDiscoShort
	}
	m := discoMsg{kind: pt[0]}
	body := pt[1:]
	switch m.kind {
	case discoPing:
		if len(body) != discoTxIDLen+32 {
			return discoMsg{}, errors.New("disco: bad ping length")
		}
		copy(m.txid[:], body)
		copy(m.wgKey[:], body[discoTxIDLen:])
	case discoPong:
		if len(body) != discoTxIDLen+discoAddrLen {
			return discoMsg{}, errors.New("disco: bad pong length")
		}
		copy(m.txid[:], body)
		m.addr = parseAddr(body[discoTxIDLen:])
	case discoCallMe:
		if len(body)%discoAddrLen != 0 || len(body)/discoAddrLen > maxCallMeMaybe {
			return discoMsg{}, errors.New("disco: bad call-me-maybe length")
		}
		for off := 0; off < len(body); off += discoAddrLen {
			if ap := parseAddr(body[off:]); ap.IsValid() && ap.Port() != 0 && !ap.Addr().IsUnspecified() {
				m.cands = append(m.cands, ap)
			}
		}
	case discoPunched:
		if len(body) != 32+1 {
			return discoMsg{}, errors.New("disco: bad pre-punched length")
		}
		copy(m.wgKey[:], body)
		m.reply = body[32]&punchedReply != 0
	default:
		return discoMsg{}, errors.New("disco: unknown message type")
	}
	return m, nil
}

func appendAddr(b []byte, ap netip.AddrPort) []byte {
	a16 := ap.Addr().As16()
	b = append(b, a16[:]...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func parseAddr(b []byte) netip.AddrPort {
	a := netip.AddrFrom16([16]byte(b[:16])).Unmap()
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[16:18]))
}

func newTxID() (t txID) {
	_, _ = rand.Read(t[:])
	return t
}
