package overlay

import (
	"encoding/binary"
	"net/netip"
)

// This file parses just enough of an IP packet for the packet filter
// (filter.go): addresses, protocol, ports, TCP flags, ICMP type and the
// packet an ICMP error quotes. It never allocates and never panics: every
// index is checked against the packet length first (FuzzFilterPacket).

// parseResult says why a packet could not be judged on its rules.
type parseResult uint8

const (
	parseOK        parseResult = iota
	parseMalformed             // truncated, bad lengths, unknown IP version
	parseFragment              // IPv4 MF/offset or an IPv6 fragment header
)

// icmpKind classifies ICMP messages for connection tracking.
type icmpKind uint8

const (
	icmpNone    icmpKind = iota // not ICMP
	icmpRequest                 // echo request: opens a flow keyed by its id
	icmpReply                   // echo reply: only as a reply of a flow
	icmpError                   // destination unreachable, too big, time exceeded, parameter problem: only related to a flow
	icmpOther                   // any other type: judged by the rules, no flow
)

// flowKey is a connection's 5-tuple. Addresses are 16 bytes (IPv4 as
// IPv4-mapped IPv6), so one key type serves both families. For ICMP echo,
// the id is the source port of a request and the destination port of a
// reply, so both directions of one ping share a canonical key.
type flowKey struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        uint8
}

// reverse is the key of the other direction.
func (k flowKey) reverse() flowKey {
	return flowKey{src: k.dst, dst: k.src, sport: k.dport, dport: k.sport, proto: k.proto}
}

// pktInfo is what the filter knows about one packet.
type pktInfo struct {
	key        flowKey
	v6         bool
	hasPorts   bool // TCP or UDP: key ports are real ports
	icmp       icmpKind
	tcpFlags   uint8
	tcpDataOff uint8 // TCP header length
	tcpSeq     uint32
	tcpAck     uint32
	l4Len      int     // bytes from the transport header to the end of the packet
	inner      flowKey // icmpError: the quoted packet's key
	ipLen      int     // the packet's length per its IP header
}

func (p *pktInfo) src() netip.Addr { return addr16(p.key.src) }
func (p *pktInfo) dst() netip.Addr { return addr16(p.key.dst) }

// addr16 turns a key address back into an Addr (IPv4 unmapped). It does not
// allocate.
func addr16(a [16]byte) netip.Addr { return netip.AddrFrom16(a).Unmap() }

// parsePacket fills p from pkt. With quoted set it parses the packet quoted
// inside an ICMP error, which is allowed to be cut short after the first 8
// bytes of its transport header (RFC 792; RFC 4443 §3.1).
func parsePacket(pkt []byte, p *pktInfo) parseResult {
	return parseIP(pkt, p, false)
}

func parseIP(pkt []byte, p *pktInfo, quoted bool) parseResult {
	*p = pktInfo{}
	if len(pkt) < 1 {
		return parseMalformed
	}
	var (
		proto uint8
		l4    []byte
	)
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return parseMalformed
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < 20 || total < ihl || len(pkt) < ihl {
			return parseMalformed
		}
		if total > len(pkt) {
			if !quoted {
				return parseMalformed
			}
			total = len(pkt)
		}
		if frag := binary.BigEndian.Uint16(pkt[6:8]); frag&0x3fff != 0 { // MF or offset
			return parseFragment
		}
		proto = pkt[9]
		p.key.src = netip.AddrFrom4([4]byte(pkt[12:16])).As16()
		p.key.dst = netip.AddrFrom4([4]byte(pkt[16:20])).As16()
		p.ipLen = total
		l4 = pkt[ihl:total]
	case 6:
		if len(pkt) < 40 {
			return parseMalformed
		}
		total := 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if total > len(pkt) {
			if !quoted {
				return parseMalformed
			}
			total = len(pkt)
		}
		if total == 40 && !quoted && pkt[6] != protoNoNextHdr {
			// A zero payload length with a next header means a jumbogram
			// (RFC 2675), which never crosses an overlay link.
			return parseMalformed
		}
		p.v6 = true
		p.key.src = [16]byte(pkt[8:24])
		p.key.dst = [16]byte(pkt[24:40])
		p.ipLen = total
		proto = pkt[6]
		off := 40
	walk:
		for range maxExtHeaders {
			switch proto {
			case protoHopByHop, protoRouting, protoDestOpts:
				if off+8 > total {
					return parseMalformed
				}
				proto = pkt[off]
				off += 8 + int(pkt[off+1])*8
				if off > total {
					return parseMalformed
				}
				continue
			case protoFragment:
				return parseFragment
			default:
				break walk
			}
		}
		switch proto {
		case protoHopByHop, protoRouting, protoDestOpts:
			return parseMalformed // more than maxExtHeaders
		}
		l4 = pkt[off:total]
	default:
		return parseMalformed
	}
	p.key.proto = proto
	p.l4Len = len(l4)
	switch proto {
	case protoTCP:
		if quoted {
			if len(l4) < 8 {
				return parseMalformed
			}
		} else {
			if len(l4) < 20 {
				return parseMalformed
			}
			doff := int(l4[12]>>4) * 4
			if doff < 20 || doff > len(l4) {
				return parseMalformed
			}
			p.tcpFlags = l4[13]
			p.tcpDataOff = uint8(doff)
		}
		p.key.sport = binary.BigEndian.Uint16(l4[0:2])
		p.key.dport = binary.BigEndian.Uint16(l4[2:4])
		p.tcpSeq = binary.BigEndian.Uint32(l4[4:8])
		if !quoted {
			p.tcpAck = binary.BigEndian.Uint32(l4[8:12])
		}
		p.hasPorts = true
	case protoUDP:
		if len(l4) < 8 {
			return parseMalformed
		}
		if !quoted {
			if ul := int(binary.BigEndian.Uint16(l4[4:6])); ul < 8 || ul > len(l4) {
				return parseMalformed
			}
		}
		p.key.sport = binary.BigEndian.Uint16(l4[0:2])
		p.key.dport = binary.BigEndian.Uint16(l4[2:4])
		p.hasPorts = true
	case protoICMP, protoICMPv6:
		if (proto == protoICMP) == p.v6 {
			return parseMalformed // ICMPv4 in IPv6 or ICMPv6 in IPv4
		}
		if len(l4) < 8 {
			return parseMalformed
		}
		typ := l4[0]
		id := binary.BigEndian.Uint16(l4[4:6])
		switch {
		case (!p.v6 && typ == icmp4Echo) || (p.v6 && typ == icmp6Echo):
			p.icmp, p.key.sport = icmpRequest, id
		case (!p.v6 && typ == icmp4EchoReply) || (p.v6 && typ == icmp6EchoReply):
			p.icmp, p.key.dport = icmpReply, id
		case !p.v6 && (typ == icmp4Unreach || typ == icmp4TimeExceed || typ == icmp4ParamProb),
			p.v6 && (typ == icmp6Unreach || typ == icmp6PacketTooBig || typ == icmp6TimeExceed || typ == icmp6ParamProb):
			if quoted {
				return parseMalformed // an error about an error is never sent (RFC 1122 §3.2.2)
			}
			var q pktInfo
			if r := parseIP(l4[8:], &q, true); r != parseOK {
				return r
			}
			if q.v6 != p.v6 {
				return parseMalformed
			}
			p.icmp, p.inner = icmpError, q.key
		default:
			p.icmp = icmpOther
		}
	}
	return parseOK
}

// isUnicast reports whether a key address may be the end of a connection:
// not multicast, broadcast or unspecified.
func isUnicast(a [16]byte) bool {
	ip := addr16(a)
	return !ip.IsMulticast() && !ip.IsUnspecified() && ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}
