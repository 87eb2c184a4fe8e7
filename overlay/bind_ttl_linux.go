package overlay

import (
	"errors"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SendTTL sends one datagram to dst with the IP TTL (IPv6 hop limit) set to
// ttl for this datagram only (an IP_TTL / IPV6_HOPLIMIT control message),
// so concurrent data sends on the same socket keep the default.
//
// Path discovery uses it to "pre-punch": a datagram that leaves through our
// own NAT, creating its mapping for dst, but expires before it reaches the
// peer's NAT. A full-TTL probe that arrived at the peer's NAT before the peer
// itself had sent to us would leave an unreplied conntrack entry there, and
// Linux would then give the peer's own packets to us a different, random
// public port (the conntrack clash); see probe.go.
//
// On a BindConfig.PacketConn (no IP header of ours) it is a plain send.
func (b *Bind) SendTTL(pkt []byte, dst netip.AddrPort, ttl int) error {
	s := b.sock.Load()
	if s == nil {
		return net.ErrClosed
	}
	if ttl < 1 || ttl > 255 {
		return errors.New("overlay: bind: TTL out of range")
	}
	if s.pc != nil {
		return b.sendPacketConn(s, [][]byte{pkt}, newUDPEndpoint(dst)) // no TTL on a custom transport
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	var oob []byte
	if dst.Addr().Is4() {
		oob = intCmsg(unix.IPPROTO_IP, unix.IP_TTL, ttl)
	} else {
		oob = intCmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, ttl)
	}
	if dst.Addr().Is4() && !s.v4only {
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	_, _, err := s.uc.WriteMsgUDPAddrPort(pkt, oob, dst)
	if err != nil {
		b.txErrors.Add(1)
		return err
	}
	b.txPackets.Add(1)
	b.txBytes.Add(uint64(len(pkt)))
	return nil
}

// intCmsg is one control message carrying a C int.
func intCmsg(level, typ, v int) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = int32(v)
	return b
}
