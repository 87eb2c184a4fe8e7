package dns

import (
	"context"
	"net/netip"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"
)

// serveDNS answers one query. It runs on miekg's per-query goroutines and
// reads only the current immutable table, so it takes no lock.
func (s *Server) serveDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	resp := s.checkQuery(req)
	if resp == nil {
		resp = s.answer(req)
	}
	if resp == nil { // forward
		resp = s.forward(w, req)
	}
	if isUDP(w) {
		resp.Truncate(udpSize(req))
	}
	_ = w.WriteMsg(resp) // the client may be gone; nothing to do
}

func isUDP(w mdns.ResponseWriter) bool {
	a := w.RemoteAddr()
	return a != nil && strings.HasPrefix(a.Network(), "udp")
}

// udpSize is the largest UDP response the client accepts (RFC 6891 §6.2.5).
func udpSize(req *mdns.Msg) int {
	if o := req.IsEdns0(); o != nil {
		return max(int(o.UDPSize()), mdns.MinMsgSize)
	}
	return mdns.MinMsgSize
}

// answer builds the response to a query that passed checkQuery from the
// table, or returns nil when the query is to be forwarded.
func (s *Server) answer(req *mdns.Msg) *mdns.Msg {
	resp := new(mdns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = s.upstream != ""
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	t := s.table.Load()

	var (
		bare   string // agent name asked for, "" if none of ours
		inZone bool   // authoritative for the name
	)
	switch {
	case name == s.domain:
		inZone = true
	case strings.HasSuffix(name, "."+s.domain):
		inZone = true
		bare = strings.TrimSuffix(name, "."+s.domain)
	case mdns.CountLabel(name) == 1:
		if _, ok := t.byName[strings.TrimSuffix(name, ".")]; ok {
			inZone, bare = true, strings.TrimSuffix(name, ".")
		}
	default:
		if ip, ok := parseReverse(name); ok {
			if n, ok := t.byAddr[ip]; ok {
				return s.reverse(resp, q, n)
			}
		}
	}
	if !inZone {
		if s.upstream == "" {
			s.stats.refused.Add(1)
			return resp.SetRcode(req, mdns.RcodeRefused)
		}
		return nil
	}
	resp.Authoritative = true
	if q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY {
		s.stats.refused.Add(1)
		return resp.SetRcode(req, mdns.RcodeRefused)
	}
	if name == s.domain { // the apex has only its SOA
		if q.Qtype == mdns.TypeSOA || q.Qtype == mdns.TypeANY {
			resp.Answer = append(resp.Answer, s.soa(t))
			s.stats.answer.Add(1)
			return resp
		}
		return s.noData(resp, t)
	}
	r, ok := t.byName[bare]
	if !ok { // unknown, or deeper than one label under the domain
		resp.Rcode = mdns.RcodeNameError
		resp.Ns = append(resp.Ns, s.soa(t))
		s.stats.nxdomain.Add(1)
		return resp
	}
	hdr := func(rt uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: q.Name, Rrtype: rt, Class: mdns.ClassINET, Ttl: ttl}
	}
	if (q.Qtype == mdns.TypeA || q.Qtype == mdns.TypeANY) && r.IPv4.IsValid() {
		resp.Answer = append(resp.Answer, &mdns.A{Hdr: hdr(mdns.TypeA), A: r.IPv4.AsSlice()})
	}
	if (q.Qtype == mdns.TypeAAAA || q.Qtype == mdns.TypeANY) && r.IPv6.IsValid() {
		resp.Answer = append(resp.Answer, &mdns.AAAA{Hdr: hdr(mdns.TypeAAAA), AAAA: r.IPv6.AsSlice()})
	}
	if len(resp.Answer) == 0 {
		return s.noData(resp, t)
	}
	s.stats.answer.Add(1)
	return resp
}

func (s *Server) noData(resp *mdns.Msg, t *table) *mdns.Msg {
	resp.Ns = append(resp.Ns, s.soa(t))
	s.stats.nodata.Add(1)
	return resp
}

// reverse answers a query for the reverse name of one of our virtual IPs.
func (s *Server) reverse(resp *mdns.Msg, q mdns.Question, name string) *mdns.Msg {
	resp.Authoritative = true
	if q.Qtype != mdns.TypePTR && q.Qtype != mdns.TypeANY {
		resp.Ns = nil // no SOA: we are not the apex of arpa
		s.stats.nodata.Add(1)
		return resp
	}
	resp.Answer = append(resp.Answer, &mdns.PTR{
		Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: ttl},
		Ptr: name + "." + s.domain,
	})
	s.stats.answer.Add(1)
	return resp
}

// soa is the zone's SOA; its minimum (negative TTL, RFC 2308) equals ttl.
func (s *Server) soa(t *table) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: s.domain, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: ttl},
		Ns:      "ns." + s.domain,
		Mbox:    "hostmaster." + s.domain,
		Serial:  t.serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  ttl,
	}
}

// forward asks the upstream over the query's transport and returns its
// answer, or SERVFAIL.
func (s *Server) forward(w mdns.ResponseWriter, req *mdns.Msg) *mdns.Msg {
	network := "udp"
	if !isUDP(w) {
		network = "tcp"
	}
	c := &mdns.Client{Net: network, Timeout: forwardTimeout, UDPSize: uint16(udpSize(req))}
	ctx, cancel := context.WithTimeout(s.ctx, forwardTimeout)
	defer cancel()
	in, _, err := c.ExchangeContext(ctx, req.Copy(), s.upstream)
	if err != nil || in == nil {
		s.log.Debug("dns: forward failed", "relay", s.upstream, "path", network, "err", err)
		s.stats.servfail.Add(1)
		resp := new(mdns.Msg)
		resp.SetRcode(req, mdns.RcodeServerFailure)
		resp.RecursionAvailable = true
		return resp
	}
	in.Id = req.Id
	s.stats.forwarded.Add(1)
	return in
}

// parseReverse turns d.c.b.a.in-addr.arpa. or a 32-nibble ip6.arpa. name
// (lowercase, with trailing dot) into its address (RFC 1035 §3.5, RFC 3596 §2.5).
func parseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var ip [4]byte
		for i, l := range labels {
			if len(l) == 0 || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			ip[3-i] = byte(v)
		}
		return netip.AddrFrom4(ip), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		if len(rest) != 63 { // 32 nibbles and 31 dots
			return netip.Addr{}, false
		}
		var ip [16]byte
		for i := range 32 {
			c := rest[2*i]
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			var v byte
			switch {
			case c >= '0' && c <= '9':
				v = c - '0'
			case c >= 'a' && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			// Nibble i counts from the least significant end.
			pos := 31 - i
			if pos%2 == 0 {
				ip[pos/2] |= v << 4
			} else {
				ip[pos/2] |= v
			}
		}
		return netip.AddrFrom16(ip), true
	}
	return netip.Addr{}, false
}

// validLabel reports whether s is one lowercase LDH label (RFC 1123 §2.1).
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
