package relay

import (
	"errors"
	"net"

	"github.com/pion/stun/v3"
)

// serveSTUNAlt answers STUN binding requests (RFC 8489 §6.3.1) on the
// STUN alt socket and ignores everything else. A node compares the mapped
// address seen here with the one seen on the main port: a NAT that maps
// both to the same address is endpoint-independent (RFC 4787 §4.1).
// The reply is no larger than the request, so it cannot amplify.
func (s *Server) serveSTUNAlt(uc *net.UDPConn) {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	var req stun.Message
	for {
		n, from, err := uc.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		} else if err != nil {
			continue
		}
		if !stun.IsMessage(buf[:n]) {
			continue
		}
		req.Raw = append(req.Raw[:0], buf[:n]...)
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		ip := from.Addr().Unmap()
		resp, err := stun.Build(&stun.Message{TransactionID: req.TransactionID}, stun.BindingSuccess,
			&stun.XORMappedAddress{IP: ip.AsSlice(), Port: int(from.Port())}, stun.Fingerprint)
		if err != nil {
			continue
		}
		if _, err := uc.WriteToUDPAddrPort(resp.Raw, from); err == nil {
			s.stats.stunAlt.Add(1)
		}
	}
}
