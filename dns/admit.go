package dns

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"time"

	mdns "github.com/miekg/dns"
)

// What reaches the handler, in order:
//
//  1. The source. A datagram or connection from outside Config.Allow is
//     dropped before a byte of it is parsed, so it gets nothing back, not
//     even the FORMERR that miekg sends for garbage: the resolver answers
//     the overlay, not whatever network routes to its address (a kernel-TUN
//     host that forwards IPv4 would otherwise serve its whole LAN).
//  2. The framing (vet): a query is exactly the records its header counts,
//     no more bytes and no fewer. miekg ignores trailing bytes, so a query
//     carrying a second question behind QDCOUNT=1 was answered.
//  3. The header (acceptHeader): one question, no answer or authority
//     records, at most one additional record (the OPT).
//  4. The sections (checkQuery, in the handler): the additional record is
//     an OPT, and its EDNS version is 0.

// errRefusedSource ends a TCP connection from a source outside Allow.
var errRefusedSource = errors.New("dns: source not allowed")

// loopback is Config.Allow's default.
func loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// admit reports whether a query from a may be read; it counts and logs
// (once per source per refusedLogInterval) those that may not.
func (s *Server) admit(a net.Addr) bool {
	ip := addrOf(a)
	for _, p := range s.allow {
		if p.Contains(ip) {
			return true
		}
	}
	s.stats.refusedSource.Add(1)
	if s.limiter.Allow(ip.String(), s.now()) {
		s.log.Info("dns: query from a source outside the overlay refused", "endpoint", a, "reason", "source not allowed")
	}
	return false
}

// addrOf is a's IP, unmapped, or the zero Addr (which no prefix contains).
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// reader is miekg's Reader with steps 1 and 2 in front (Server.DecorateReader).
type reader struct {
	next mdns.PacketConnReader
	s    *Server
}

var _ mdns.PacketConnReader = reader{}

func (s *Server) decorateReader(r mdns.Reader) mdns.Reader {
	// miekg's own reader is a PacketConnReader; the generic net.PacketConn
	// of the netstack needs that.
	return reader{next: r.(mdns.PacketConnReader), s: s}
}

// ReadTCP refuses the connection at its first read when its source is not
// allowed: miekg closes it on the error, before reading anything.
func (r reader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	if !r.s.admit(conn.RemoteAddr()) {
		return nil, errRefusedSource
	}
	m, err := r.next.ReadTCP(conn, timeout)
	if err != nil {
		return m, err
	}
	return r.s.vet(m), nil
}

// ReadUDP skips datagrams from sources that are not allowed.
func (r reader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *mdns.SessionUDP, error) {
	for {
		m, sess, err := r.next.ReadUDP(conn, timeout)
		if err != nil {
			return m, sess, err
		}
		if r.s.admit(sess.RemoteAddr()) {
			return r.s.vet(m), sess, nil
		}
	}
}

// ReadPacketConn is ReadUDP for a generic net.PacketConn (the netstack's).
func (r reader) ReadPacketConn(conn net.PacketConn, timeout time.Duration) ([]byte, net.Addr, error) {
	for {
		m, from, err := r.next.ReadPacketConn(conn, timeout)
		if err != nil {
			return m, from, err
		}
		if r.s.admit(from) {
			return r.s.vet(m), from, nil
		}
	}
}

// vet returns m when it is exactly the records its header counts (RFC 1035
// §4.1). Otherwise it returns m's header alone with every count zeroed:
// a query without a question, which acceptHeader rejects, so the client
// gets FORMERR with its ID as for any other malformed query. Messages
// shorter than a header go through unchanged; miekg drops them.
func (s *Server) vet(m []byte) []byte {
	const headerSize = 12
	if len(m) < headerSize || framed(m) {
		return m
	}
	clear(m[4:headerSize]) // QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT
	return m[:headerSize]
}

// framed reports whether m's sections end exactly at the end of m. It only
// walks the structure; miekg checks the contents.
func framed(m []byte) bool {
	qd := int(binary.BigEndian.Uint16(m[4:]))
	rrs := int(binary.BigEndian.Uint16(m[6:])) + int(binary.BigEndian.Uint16(m[8:])) + int(binary.BigEndian.Uint16(m[10:]))
	off := 12
	var ok bool
	for range qd {
		if off, ok = skipName(m, off); !ok || off+4 > len(m) {
			return false
		}
		off += 4 // QTYPE, QCLASS
	}
	for range rrs {
		if off, ok = skipName(m, off); !ok || off+10 > len(m) {
			return false
		}
		off += 10 + int(binary.BigEndian.Uint16(m[off+8:])) // TYPE, CLASS, TTL, RDLENGTH, RDATA
		if off > len(m) {
			return false
		}
	}
	return off == len(m)
}

// skipName returns the offset just past the domain name at off: its labels
// up to the root label or a compression pointer (RFC 1035 §4.1.4).
func skipName(m []byte, off int) (int, bool) {
	for off < len(m) {
		c := int(m[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return off + 1, true
			}
			off += 1 + c
		case 0xC0:
			if off+2 > len(m) {
				return 0, false
			}
			return off + 2, true
		default: // 0x40 and 0x80 are reserved label types
			return 0, false
		}
	}
	return 0, false
}

// acceptHeader is miekg's MsgAcceptFunc: it rejects, from the header
// alone, what miekg's default lets through and a stub query never has.
func (s *Server) acceptHeader(dh mdns.Header) mdns.MsgAcceptAction {
	a := acceptHeader(dh)
	if a != mdns.MsgAccept {
		s.stats.formerr.Add(1)
	}
	return a
}

func acceptHeader(dh mdns.Header) mdns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return mdns.MsgIgnore // a response: never answer one
	}
	if opcode := int(dh.Bits>>11) & 0xF; opcode != mdns.OpcodeQuery {
		return mdns.MsgRejectNotImplemented
	}
	// One question (RFC 9619); no answer or authority records; at most the
	// one OPT (RFC 6891 §6.1.1: more than one is FORMERR). We do not
	// speak TSIG, so a second additional record has no use here.
	if dh.Qdcount != 1 || dh.Ancount != 0 || dh.Nscount != 0 || dh.Arcount > 1 {
		return mdns.MsgReject
	}
	return mdns.MsgAccept
}

// checkQuery is the last step, on the unpacked query: it returns the
// response that refuses req, or nil when req may be answered. It repeats
// the header's rules on the sections, since the handler may be called
// without the reader in front (the fuzz target does).
func (s *Server) checkQuery(req *mdns.Msg) *mdns.Msg {
	formErr := func() *mdns.Msg {
		s.stats.formerr.Add(1)
		return new(mdns.Msg).SetRcode(req, mdns.RcodeFormatError)
	}
	if req.Response || req.Opcode != mdns.OpcodeQuery || len(req.Question) != 1 || len(req.Answer) != 0 || len(req.Ns) != 0 || len(req.Extra) > 1 {
		return formErr()
	}
	if len(req.Extra) == 0 {
		return nil
	}
	opt, ok := req.Extra[0].(*mdns.OPT)
	if !ok {
		return formErr()
	}
	// RFC 6891 §6.1.3: a version we do not implement gets BADVERS, in an
	// OPT carrying the version we do (0).
	if opt.Version() != 0 {
		s.stats.badvers.Add(1)
		resp := new(mdns.Msg).SetRcode(req, mdns.RcodeBadVers)
		resp.SetEdns0(max(opt.UDPSize(), mdns.MinMsgSize), false)
		return resp
	}
	return nil
}
