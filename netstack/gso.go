package netstack

import (
	"encoding/binary"
	"errors"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// TCP segmentation at the seam between gVisor and wireguard-go.
//
// gVisor's TCP, told that the link does "host" GSO (see link.go for why not
// GVisorGSOSupported), hands WritePackets one large segment of up to 64 KiB
// with an IP header, a TCP header whose checksum is only partial
// (CHECKSUM_PARTIAL, Linux's name) and GSOOptions.MSS. Here it is cut into
// wire-sized packets the way a NIC's TSO engine does it (cf. Linux
// net/ipv4/tcp_offload.c): every segment carries a copy of the headers, its
// own IPv4 total length or IPv6 payload length, an IPv4 ID incremented per
// segment, a fresh IPv4 header checksum, sequence number advanced by the
// payload already emitted, FIN and PSH only on the last segment, and a full
// TCP checksum over the RFC 793 §3.1 / RFC 8200 §8.1 pseudo-header.

// errShortBuffer reports a caller buffer too small for a segment.
var errShortBuffer = errors.New("netstack: tun read buffer too small for packet")

// tcpSegmenter splits one flattened IPv4/IPv6 TCP packet into segments of at
// most mss payload bytes. It is resumable: fill may be called repeatedly with
// fresh batches until done reports true, so a 64 KiB segment (45 packets at
// MTU 1500) can straddle two tun.Device Read calls.
//
// The zero value is done. pkt is borrowed, not copied: the owner (linkTUN's
// reader) keeps it alive and unmodified until done.
type tcpSegmenter struct {
	pkt    []byte // whole IP packet: IP header, TCP header, payload
	v6     bool
	ipLen  int // IP header length, including IPv6 extension headers
	hdrLen int // ipLen + TCP header length
	mss    int
	next   int // payload offset of the next segment to emit
	seg    int // index of the next segment (IPv4 ID increment)
	active bool
}

// reset starts segmenting pkt, a complete IP packet carrying TCP with
// headers ipLen (IP) and tcpLen (TCP) bytes long. mss <= 0 means "do not
// split": the packet is emitted whole with its checksums completed.
func (g *tcpSegmenter) reset(pkt []byte, v6 bool, ipLen, tcpLen, mss int) {
	payload := len(pkt) - ipLen - tcpLen
	if mss <= 0 || mss > payload {
		mss = max(payload, 1)
	}
	*g = tcpSegmenter{
		pkt:    pkt,
		v6:     v6,
		ipLen:  ipLen,
		hdrLen: ipLen + tcpLen,
		mss:    mss,
		active: true,
	}
}

// done reports whether every segment has been emitted.
func (g *tcpSegmenter) done() bool { return !g.active }

// segments returns how many packets the whole packet splits into.
func (g *tcpSegmenter) segments() int {
	payload := len(g.pkt) - g.hdrLen
	if payload <= 0 {
		return 1
	}
	return (payload + g.mss - 1) / g.mss
}

// fill writes the next segments into bufs[i][offset:], recording each length
// in sizes[i], until bufs is full or the packet is exhausted. It returns the
// number of buffers filled. A buffer too small for a segment stops the
// packet with errShortBuffer (the caller drops and counts the rest).
func (g *tcpSegmenter) fill(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	payloadTotal := len(g.pkt) - g.hdrLen
	for n < len(bufs) && g.active {
		plen := min(g.mss, payloadTotal-g.next)
		last := g.next+plen >= payloadTotal
		dst := bufs[n][offset:]
		size := g.hdrLen + plen
		if len(dst) < size {
			g.active = false
			return n, errShortBuffer
		}
		copy(dst, g.pkt[:g.hdrLen])
		copy(dst[g.hdrLen:], g.pkt[g.hdrLen+g.next:g.hdrLen+g.next+plen])
		g.fixHeaders(dst[:size], plen, last)
		sizes[n] = size
		n++
		g.next += plen
		g.seg++
		if last {
			g.active = false
		}
	}
	return n, nil
}

// fixHeaders rewrites the copied headers of one segment whose payload is
// plen bytes at payload offset g.next.
func (g *tcpSegmenter) fixHeaders(p []byte, plen int, last bool) {
	tcp := p[g.ipLen:]
	tcpTotal := len(p) - g.ipLen
	if g.v6 {
		// RFC 8200 §3: payload length counts extension headers too.
		binary.BigEndian.PutUint16(p[4:6], uint16(len(p)-ipv6HeaderLen))
	} else {
		binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
		id := binary.BigEndian.Uint16(p[4:6])
		binary.BigEndian.PutUint16(p[4:6], id+uint16(g.seg))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:12], ^checksum.Checksum(p[:g.ipLen], 0))
	}
	if g.next > 0 {
		seq := binary.BigEndian.Uint32(tcp[4:8])
		binary.BigEndian.PutUint32(tcp[4:8], seq+uint32(g.next))
	}
	if !last {
		tcp[13] &^= tcpFlagFIN | tcpFlagPSH
	}
	setTCPChecksum(p, g.v6, g.ipLen, tcpTotal)
}

// setTCPChecksum computes the full TCP checksum of the packet p whose TCP
// header starts at ipLen, including the pseudo-header (RFC 793 §3.1 for
// IPv4: src, dst, zero, proto, TCP length; RFC 8200 §8.1 for IPv6: src, dst,
// upper-layer length, next header).
func setTCPChecksum(p []byte, v6 bool, ipLen, tcpTotal int) {
	var xsum uint16
	if v6 {
		xsum = checksum.Checksum(p[8:40], 0)
	} else {
		xsum = checksum.Checksum(p[12:20], 0)
	}
	var ph [4]byte
	ph[1] = protoTCP
	binary.BigEndian.PutUint16(ph[2:], uint16(tcpTotal))
	xsum = checksum.Checksum(ph[:], xsum)
	tcp := p[ipLen:]
	tcp[tcpChecksumOff], tcp[tcpChecksumOff+1] = 0, 0
	xsum = checksum.Checksum(tcp[:tcpTotal], xsum)
	binary.BigEndian.PutUint16(tcp[tcpChecksumOff:], ^xsum)
}
