//go:build !linux

package overlay

import (
	"errors"
	"net"
	"net/netip"
)

// errNoTTL is SendTTL's answer where a per-datagram TTL is not implemented:
// the caller skips the TTL-limited pre-punch (probe.go) and sends the full
// ping at its usual time.
var errNoTTL = errors.New("overlay: bind: per-datagram TTL not supported on this OS")

// SendTTL is bind_ttl_linux.go's per-datagram TTL send. Elsewhere it only
// works on a BindConfig.PacketConn (where the TTL is ignored there too) and
// returns errNoTTL for the UDP socket.
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
	return errNoTTL
}
