package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/agentnet/agentnet/netstack"
	agenttun "github.com/agentnet/agentnet/tun"
	"github.com/agentnet/agentnet/wire"
)

// kernelPlane is kernel TUN mode: agents use the host's own TCP/IP stack;
// the node's addresses sit on a TUN device and the overlay prefixes are
// routed into it. Packets to the DNS IP are diverted into a small gVisor
// stack that owns only that address, where the built-in DNS answers.
type kernelPlane struct {
	dev    *agenttun.Device
	dns    *netstack.Stack
	divert *dnsDivert
	self4  netip.Addr
	self6  netip.Addr
}

func newKernelPlane(name string, mtu int, m *wire.Map, log *slog.Logger) (*kernelPlane, error) {
	dev, err := agenttun.Create(agenttun.Config{
		Name: name, MTU: mtu, Logger: log,
		Addrs:  []netip.Prefix{netip.PrefixFrom(m.Self.IPv4, 32), netip.PrefixFrom(m.Self.IPv6, 128)},
		Routes: []netip.Prefix{m.Prefix4, m.Prefix6, netip.PrefixFrom(m.DNSIP, 32)},
	})
	if err != nil {
		return nil, err
	}
	dns, err := netstack.New(netstack.Config{Addrs: []netip.Addr{m.DNSIP}, MTU: mtu, Logger: log})
	if err != nil {
		dev.Close()
		return nil, err
	}
	p := &kernelPlane{dev: dev, dns: dns, self4: m.Self.IPv4, self6: m.Self.IPv6}
	p.divert = newDNSDivert(dev.TUN(), dns.TUN(), m.DNSIP, log)
	return p, nil
}

func (p *kernelPlane) TUN() wgtun.Device { return p.divert }

func (p *kernelPlane) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// listenAddr picks the virtual IPv4 for an unspecified address: in kernel
// mode ":port" must not mean every interface of the host.
func (p *kernelPlane) listenAddr(ap netip.AddrPort) string {
	if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
		ap = netip.AddrPortFrom(p.self4, ap.Port())
	}
	return ap.String()
}

func (p *kernelPlane) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	return net.Listen("tcp", p.listenAddr(ap))
}

func (p *kernelPlane) ListenUDP(ap netip.AddrPort) (net.PacketConn, error) {
	return net.ListenPacket("udp", p.listenAddr(ap))
}

func (p *kernelPlane) ListenDNS(ap netip.AddrPort) (net.PacketConn, net.Listener, error) {
	return netstackPlane{p.dns}.ListenDNS(ap)
}

// Ping sends an ICMP echo through the kernel (and so the TUN device).
// It needs an unprivileged ping socket (net.ipv4.ping_group_range) or
// CAP_NET_RAW.
func (p *kernelPlane) Ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	// An unprivileged ICMP socket first (net.ipv4.ping_group_range), else
	// a raw one (CAP_NET_RAW). They differ in the address WriteTo takes
	// and in what ReadFrom sees: a raw socket gets every ICMP packet for
	// the address, so replies are matched by our ID (the kernel rewrites
	// the ID on an unprivileged socket and delivers only its own replies).
	raw := false
	c, err := icmp.ListenPacket("udp4", p.self4.String())
	if err != nil {
		if c, err = icmp.ListenPacket("ip4:icmp", p.self4.String()); err != nil {
			return 0, fmt.Errorf("open ICMP socket (needs CAP_NET_RAW or net.ipv4.ping_group_range): %w", err)
		}
		raw = true
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("agentnet ping")}}
	b, _ := msg.Marshal(nil)
	var to net.Addr = &net.UDPAddr{IP: dst.AsSlice()}
	if raw {
		to = &net.IPAddr{IP: dst.AsSlice()}
	}
	start := time.Now() // an RTT times real I/O: the real clock, not the node's
	if _, err := c.WriteTo(b, to); err != nil {
		return 0, err
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return 0, err
		}
		r, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || r.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := r.Body.(*icmp.Echo); raw && (!ok || e.ID != id) {
			continue // another program's reply, seen by our raw socket
		}
		return time.Since(start), nil
	}
}

func (p *kernelPlane) Close() error {
	p.divert.Close()
	p.dns.Close()
	return p.dev.Close()
}

// dnsDivert is the kernel TUN device as wireguard-go sees it, minus the
// packets addressed to the DNS IP: those go into the DNS stack, and its
// answers are written back to the kernel.
type dnsDivert struct {
	wgtun.Device // the kernel TUN
	dnsTUN       wgtun.Device
	dnsIP        [4]byte
	log          *slog.Logger

	once sync.Once
	wg   sync.WaitGroup
}

func newDNSDivert(kernel, dnsTUN wgtun.Device, dnsIP netip.Addr, log *slog.Logger) *dnsDivert {
	d := &dnsDivert{Device: kernel, dnsTUN: dnsTUN, dnsIP: dnsIP.As4(), log: log}
	d.wg.Add(1)
	go d.answers()
	return d
}

// Read returns the kernel's packets for WireGuard; DNS packets are handed to
// the DNS stack and left in the batch with size 0, which wireguard-go skips
// (bufs must keep their order: wireguard-go pairs them with its elements).
func (d *dnsDivert) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.Device.Read(bufs, sizes, offset)
	for i := range n {
		pkt := bufs[i][offset : offset+sizes[i]]
		if len(pkt) >= 20 && pkt[0]>>4 == 4 && [4]byte(pkt[16:20]) == d.dnsIP {
			if _, werr := d.dnsTUN.Write([][]byte{bufs[i][:offset+sizes[i]]}, offset); werr != nil {
				d.log.Debug("dns divert: drop", "err", werr)
			}
			sizes[i] = 0
		}
	}
	return n, err
}

// answers copies the DNS stack's packets (answers) back to the kernel.
func (d *dnsDivert) answers() {
	defer d.wg.Done()
	bufs := make([][]byte, d.dnsTUN.BatchSize())
	sizes := make([]int, len(bufs))
	for i := range bufs {
		bufs[i] = make([]byte, divertOffset+65535)
	}
	for {
		n, err := d.dnsTUN.Read(bufs, sizes, divertOffset)
		for i := range n {
			if _, werr := d.Device.Write([][]byte{bufs[i][:divertOffset+sizes[i]]}, divertOffset); werr != nil {
				d.log.Debug("dns divert: write to kernel", "err", werr)
			}
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
				d.log.Debug("dns divert stopped", "err", err)
			}
			return
		}
	}
}

// Close closes the kernel device (wireguard-go calls this) and stops the
// answer pump.
func (d *dnsDivert) Close() error {
	var err error
	d.once.Do(func() {
		err = d.Device.Close()
		d.dnsTUN.Close()
		d.wg.Wait()
	})
	return err
}
