package overlay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// Bind over a caller's net.PacketConn (BindConfig.PacketConn): the same
// Bind, endpoints and counters as on a real socket, one datagram per call.
// It exists so that path discovery can be tested hermetically over pion's
// transport/vnet, whose routers simulate NAT types in-process (see
// vnet_test.go), and for custom transports. The real-socket path in bind.go
// only pays a nil check for it.

// openPacketConn is Open with BindConfig.PacketConn. b.mu is held.
func (b *Bind) openPacketConn() ([]conn.ReceiveFunc, uint16, error) {
	pc := b.cfg.PacketConn
	ua, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, 0, fmt.Errorf("overlay: bind: PacketConn's local address %v is not UDP", pc.LocalAddr())
	}
	// A previous Close left a past deadline; clear it.
	if err := pc.SetReadDeadline(time.Time{}); err != nil {
		return nil, 0, fmt.Errorf("overlay: bind %s: clear read deadline: %w", ua, err)
	}
	ap := ua.AddrPort()
	s := &bindSocket{pc: pc, local: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
	b.sock.Store(s)
	b.log.Debug("bind open on a custom PacketConn", "endpoint", s.local)
	return []conn.ReceiveFunc{func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return b.receivePacketConn(s, bufs, sizes, eps)
	}}, s.local.Port(), nil
}

// receivePacketConn reads one datagram into bufs[0]. Once s is no longer
// the open socket (Close set a past deadline to wake us) it returns
// net.ErrClosed.
func (b *Bind) receivePacketConn(s *bindSocket, bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	for {
		n, from, err := s.pc.ReadFrom(bufs[0])
		if b.sock.Load() != s {
			return 0, net.ErrClosed
		}
		var ne net.Error
		switch {
		case errors.Is(err, net.ErrClosed):
			return 0, net.ErrClosed
		case errors.Is(err, io.ErrShortBuffer): // vnet: datagram larger than the buffer
			b.rxDrops.Add(1)
			continue
		case errors.As(err, &ne) && ne.Timeout():
			continue // only Close sets deadlines, and it replaced s first
		case err != nil:
			b.rxErrors.Add(1)
			return 0, err
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			b.rxDrops.Add(1)
			continue
		}
		ap := ua.AddrPort()
		sizes[0] = n
		eps[0] = &UDPEndpoint{dst: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ua: ua}
		b.rxPackets.Add(1)
		b.rxBytes.Add(uint64(n))
		return 1, nil
	}
}

// sendPacketConn writes bufs to e one WriteTo each.
func (b *Bind) sendPacketConn(s *bindSocket, bufs [][]byte, e *UDPEndpoint) error {
	var bytes int
	for _, p := range bufs {
		if _, err := s.pc.WriteTo(p, e.ua); err != nil {
			b.txErrors.Add(1)
			return err
		}
		bytes += len(p)
	}
	b.txPackets.Add(uint64(len(bufs)))
	b.txBytes.Add(uint64(bytes))
	return nil
}
