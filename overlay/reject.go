package overlay

import (
	"encoding/binary"
)

// Fail fast: a packet this node's agents send that the policy denies is
// answered locally, as if the peer had refused it, so the sender gets an
// error at once instead of a timeout:
//   - TCP: a RST (RFC 9293 §3.10.7.1: the reset a CLOSED port sends);
//   - UDP: ICMP port unreachable (ICMPv6 code 4), what iptables' REJECT
//     sends by default. gVisor turns only this code into ECONNREFUSED on a
//     connected UDP socket (it ignores "administratively prohibited" for
//     UDP), and Linux does the same;
//   - anything else: ICMP destination unreachable, communication
//     administratively prohibited (ICMPv4 code 13, RFC 1812 §5.2.7.1;
//     ICMPv6 code 1, RFC 4443 §3.1).
// No answer is built for a RST or an ICMP error (RFC 1122 §3.2.2: never an
// error about an error), nor for fragments or malformed packets (the
// caller never asks).

// buildReject writes into out the answer to the denied outbound packet pkt
// (parsed into p) and returns its length, or 0 when none is due. out must
// hold at least maxICMPv6Error bytes.
func buildReject(out, pkt []byte, p *pktInfo) int {
	switch {
	case p.key.proto == protoTCP:
		if p.tcpFlags&tcpRST != 0 {
			return 0
		}
		return buildRST(out, p)
	case p.icmp == icmpError || p.icmp == icmpReply:
		return 0
	case p.key.proto == protoUDP:
		if p.v6 {
			return buildICMPError(out, pkt[:p.ipLen], p, 1, 4) // port unreachable
		}
		return buildICMPError(out, pkt[:p.ipLen], p, 3, 3)
	default:
		if p.v6 {
			return buildICMPError(out, pkt[:p.ipLen], p, 1, 1) // administratively prohibited
		}
		return buildICMPError(out, pkt[:p.ipLen], p, 3, 13)
	}
}

// ipHeader writes an IP header from src to dst (the denied packet's
// destination and source swapped) for a payload of n bytes and returns its
// length.
func ipHeader(out []byte, p *pktInfo, proto uint8, n int) int {
	if p.v6 {
		clear(out[:40])
		out[0] = 0x60
		binary.BigEndian.PutUint16(out[4:6], uint16(n))
		out[6] = proto
		out[7] = 64
		copy(out[8:24], p.key.dst[:])
		copy(out[24:40], p.key.src[:])
		return 40
	}
	clear(out[:20])
	out[0] = 0x45
	binary.BigEndian.PutUint16(out[2:4], uint16(20+n))
	out[8] = 64
	out[9] = proto
	copy(out[12:16], p.key.dst[12:])
	copy(out[16:20], p.key.src[12:])
	binary.BigEndian.PutUint16(out[10:12], ^checksum(out[:20], 0))
	return 20
}

func buildRST(out []byte, p *pktInfo) int {
	h := ipHeader(out, p, protoTCP, 20)
	t := out[h : h+20]
	clear(t)
	binary.BigEndian.PutUint16(t[0:2], p.key.dport)
	binary.BigEndian.PutUint16(t[2:4], p.key.sport)
	if p.tcpFlags&tcpACK != 0 {
		binary.BigEndian.PutUint32(t[4:8], p.tcpAck)
		t[13] = tcpRST
	} else {
		// Acknowledge everything the segment occupied: its data, plus one
		// for SYN and one for FIN.
		dataLen := p.l4Len - int(p.tcpDataOff)
		seqLen := uint32(max(dataLen, 0))
		if p.tcpFlags&tcpSYN != 0 {
			seqLen++
		}
		if p.tcpFlags&tcpFIN != 0 {
			seqLen++
		}
		binary.BigEndian.PutUint32(t[8:12], p.tcpSeq+seqLen)
		t[13] = tcpRST | tcpACK
	}
	t[12] = 5 << 4
	binary.BigEndian.PutUint16(t[16:18], ^checksum(t, pseudoSum(p, protoTCP, 20)))
	return h + 20
}

func buildICMPError(out, orig []byte, p *pktInfo, typ, code uint8) int {
	proto, limit := uint8(protoICMP), maxICMPv4Error-20-8
	if p.v6 {
		proto, limit = protoICMPv6, maxICMPv6Error-40-8
	}
	quote := orig[:min(len(orig), limit)]
	h := ipHeader(out, p, proto, 8+len(quote))
	m := out[h : h+8+len(quote)]
	clear(m[:8])
	m[0], m[1] = typ, code
	copy(m[8:], quote)
	var sum uint32
	if p.v6 {
		sum = pseudoSum(p, protoICMPv6, len(m))
	}
	binary.BigEndian.PutUint16(m[2:4], ^checksum(m, sum))
	return h + len(m)
}

// pseudoSum is the partial checksum of the pseudo-header of a reject
// (addresses swapped) carrying n bytes of proto (RFC 9293 §3.1; RFC 8200
// §8.1).
func pseudoSum(p *pktInfo, proto uint8, n int) uint32 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	if p.v6 {
		add(p.key.src[:])
		add(p.key.dst[:])
	} else {
		add(p.key.src[12:])
		add(p.key.dst[12:])
	}
	return sum + uint32(proto) + uint32(n)
}

// checksum folds the Internet checksum (RFC 1071) of b onto initial and
// returns it uncomplemented.
func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
