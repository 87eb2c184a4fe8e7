package overlay

import (
	"context"
	"net"
	"net/netip"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/agentnet/agentnet/netstack"
)

// dataplane is where agent traffic enters and leaves the overlay on this
// host: a gVisor netstack in this process (netstack mode, no root) or the
// kernel's own stack through a TUN device (kernel TUN mode). wireguard-go
// sees only TUN().
type dataplane interface {
	// TUN is the device wireguard-go reads and writes.
	TUN() wgtun.Device
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
	// ListenTCP and ListenUDP listen on the node's virtual addresses; an
	// invalid Addr means all of them.
	ListenTCP(ap netip.AddrPort) (net.Listener, error)
	ListenUDP(ap netip.AddrPort) (net.PacketConn, error)
	// ListenDNS opens UDP and TCP at the DNS IP inside the overlay.
	ListenDNS(ap netip.AddrPort) (net.PacketConn, net.Listener, error)
	Ping(ctx context.Context, dst netip.Addr) (time.Duration, error)
	Close() error
}

// netstackPlane is netstack mode: everything lives in one gVisor stack that
// owns the node's addresses and the DNS IP.
type netstackPlane struct{ *netstack.Stack }

func (p netstackPlane) ListenDNS(ap netip.AddrPort) (net.PacketConn, net.Listener, error) {
	pc, err := p.ListenUDP(ap)
	if err != nil {
		return nil, nil, err
	}
	l, err := p.ListenTCP(ap)
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return pc, l, nil
}
