package netstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/agentnet/agentnet/internal/connlimit"
)

// nicID is the only NIC of a Stack.
const nicID tcpip.NICID = 1

// ErrInvalidConfig is returned by New for a configuration it refuses.
var ErrInvalidConfig = errors.New("netstack: invalid config")

// Config for New. Each field says its default.
type Config struct {
	// Addrs are the local addresses of the stack (node IPv4, IPv6, and
	// the DNS IP 100.100.100.100). Required: at least one. Each is added
	// as a /32 or /128; default routes for IPv4 and IPv6 point into the
	// NIC.
	Addrs []netip.Addr
	// MTU of the device. Optional, default DefaultMTU (1280). Must be at
	// least 576 (RFC 791) and fit a 64 KiB packet.
	MTU int
	// Logger. Optional, default slog.Default().
	Logger *slog.Logger

	// MaxConnsPerSource caps the inbound TCP connections from one source
	// address open at once, over all of the stack's listeners; Accept
	// resets the ones beyond it (RST) and counts them (Stats). A peer
	// counts its IPv4 and IPv6 addresses separately. Optional, default
	// connlimit.DefaultPerSource (256); negative is refused.
	MaxConnsPerSource int
	// MaxConns caps all inbound TCP connections open at once, like
	// MaxConnsPerSource. Optional, default connlimit.DefaultTotal (4096);
	// negative is refused.
	MaxConns int
	// ListenBacklog bounds each listener's connections in flight:
	// handshakes in progress and connections established but not yet
	// accepted. Past it gVisor answers SYNs with SYN cookies (no state)
	// and drops the handshake's last ACK while the accept queue is full,
	// as Linux does (the peer retransmits). Optional, default
	// DefaultListenBacklog (256); negative is refused.
	ListenBacklog int
	// Now is the clock of the refusal logs' rate limit. Optional, default
	// time.Now.
	Now func() time.Time
}

// Stack is a userspace TCP/IP stack (gVisor) whose only interface is a
// batched tun.Device for wireguard-go. It is safe for concurrent use.
type Stack struct {
	log     *slog.Logger
	stack   *stack.Stack
	link    *link
	conns   *connlimit.Limiter // inbound TCP connections of every listener
	backlog int                // Config.ListenBacklog

	closeOnce sync.Once
	done      chan struct{} // closed by Close
}

// New builds a Stack. The returned Stack owns gVisor goroutines (TCP
// timers, processors) until Close.
func New(cfg Config) (*Stack, error) {
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("%w: no Addrs", ErrInvalidConfig)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 576 || mtu > 65535 {
		return nil, fmt.Errorf("%w: MTU %d out of range [576, 65535]", ErrInvalidConfig, mtu)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	for _, a := range cfg.Addrs {
		if !a.IsValid() || a.IsUnspecified() || a.Is4In6() {
			return nil, fmt.Errorf("%w: bad address %v", ErrInvalidConfig, a)
		}
	}
	backlog := cfg.ListenBacklog
	if backlog == 0 {
		backlog = DefaultListenBacklog
	}
	if backlog < 0 {
		return nil, fmt.Errorf("%w: ListenBacklog %d is negative", ErrInvalidConfig, backlog)
	}
	conns, err := connlimit.New(connlimit.Config{PerSource: cfg.MaxConnsPerSource, Total: cfg.MaxConns, Logger: log.With("netstack", "tcp"), Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}

	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	s := &Stack{
		log:     log,
		stack:   st,
		link:    newLink(mtu, log),
		conns:   conns,
		backlog: backlog,
		done:    make(chan struct{}),
	}
	if err := s.configure(cfg.Addrs); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Stack) configure(addrs []netip.Addr) error {
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fmt.Errorf("netstack: enable SACK: %s", err)
	}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &snd); err != nil {
		return fmt.Errorf("netstack: TCP send buffer: %s", err)
	}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
		return fmt.Errorf("netstack: TCP receive buffer: %s", err)
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	if err := s.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate); err != nil {
		return fmt.Errorf("netstack: TCP moderate receive buffer: %s", err)
	}
	if err := s.stack.CreateNIC(nicID, (*linkEndpoint)(s.link)); err != nil {
		return fmt.Errorf("netstack: create NIC: %s", err)
	}
	for _, a := range addrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if err := s.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("netstack: add address %v: %s", a, err)
		}
	}
	s.stack.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	return nil
}

// TUN returns the batched tun.Device to hand to wireguard-go's
// device.NewDevice. It is the same device on every call. See linkTUN for
// buffer ownership, concurrency and Close.
func (s *Stack) TUN() tun.Device { return (*linkTUN)(s.link) }

// Close closes the device (blocked TUN Read returns os.ErrClosed), all
// endpoints (blocked Accept and conn Read/Write return errors wrapping
// net.ErrClosed) and the gVisor stack, and waits for gVisor's goroutines to
// exit. It is idempotent and works whether or not the tun.Device was
// closed first.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.link.close()
		s.stack.Close() // closes every transport endpoint, removes the NIC
		s.stack.Wait()
	})
	return nil
}

// closed reports whether Close has been called.
func (s *Stack) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Stats are data-path counters of a Stack.
type Stats struct {
	OutPackets  uint64 // packets returned by TUN Read
	OutGSO      uint64 // large TCP segments split by Read
	OutDropped  uint64 // outbound packets dropped (queue full, closed, too big)
	OutMaxBatch uint64 // most packets one Read returned
	ReadBatches uint64 // Read calls that returned packets
	InPackets   uint64 // packets accepted by TUN Write
	InDropped   uint64 // inbound packets dropped (not IP, stack closed)

	ConnsOpen             uint64 // inbound TCP connections accepted and not yet closed
	ConnsRefusedPerSource uint64 // inbound TCP connections reset: MaxConnsPerSource
	ConnsRefusedTotal     uint64 // inbound TCP connections reset: MaxConns
}

// Stats returns a snapshot of the data-path counters.
func (s *Stack) Stats() Stats {
	st := &s.link.stats
	cs := s.conns.Stats()
	return Stats{
		ConnsOpen:             uint64(cs.Open),
		ConnsRefusedPerSource: cs.RefusedPerSource,
		ConnsRefusedTotal:     cs.RefusedTotal,
		OutPackets:            st.outPackets.Load(),
		OutGSO:                st.outGSO.Load(),
		OutDropped:            st.outDropped.Load(),
		OutMaxBatch:           st.outMaxBatch.Load(),
		ReadBatches:           st.readBatches.Load(),
		InPackets:             st.inPackets.Load(),
		InDropped:             st.inDropped.Load(),
	}
}

// DialContext connects to address ("ip:port", literal IP only) over network
// "tcp", "tcp4", "tcp6", "udp", "udp4" or "udp6".
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if s.closed() {
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.ErrClosed}
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("netstack: address %q: %w", address, err)}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if err := checkFamily(network, ap.Addr()); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	fa, proto := fullAddr(ap)
	switch network {
	case "tcp", "tcp4", "tcp6":
		c, err := gonet.DialContextTCP(ctx, s.stack, fa, proto)
		if err != nil {
			return nil, err
		}
		return &tcpConn{TCPConn: c, s: s}, nil
	case "udp", "udp4", "udp6":
		c, err := gonet.DialUDP(s.stack, nil, &fa, proto)
		if err != nil {
			return nil, err
		}
		return &udpConn{UDPConn: c, s: s}, nil
	}
	return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
}

// ListenTCP listens on ap. An invalid or unspecified IPv6 address means all
// local addresses, IPv4 and IPv6; 0.0.0.0 means all local IPv4 addresses.
// Its connections count against the caps of Config (MaxConnsPerSource,
// MaxConns) from Accept until Close; Accept resets those over a cap.
func (s *Stack) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	if s.closed() {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Err: net.ErrClosed}
	}
	fa, proto := listenAddr(ap)
	// gonet.ListenTCP, but with our backlog; see tcpListener for why not
	// gonet's listener.
	wq := new(waiter.Queue)
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Err: errors.New(terr.String())}
	}
	opErr := func(op string, terr tcpip.Error) error {
		ep.Close()
		return &net.OpError{Op: op, Net: "tcp", Addr: &net.TCPAddr{IP: fa.Addr.AsSlice(), Port: int(fa.Port)}, Err: errors.New(terr.String())}
	}
	if terr := ep.Bind(fa); terr != nil {
		return nil, opErr("bind", terr)
	}
	if terr := ep.Listen(s.backlog); terr != nil {
		return nil, opErr("listen", terr)
	}
	return newTCPListener(s, ep, wq), nil
}

// ListenUDP binds a packet conn on ap, with the address rules of ListenTCP.
func (s *Stack) ListenUDP(ap netip.AddrPort) (net.PacketConn, error) {
	if s.closed() {
		return nil, &net.OpError{Op: "listen", Net: "udp", Err: net.ErrClosed}
	}
	fa, proto := listenAddr(ap)
	c, err := gonet.DialUDP(s.stack, &fa, nil, proto)
	if err != nil {
		return nil, err
	}
	return &udpConn{UDPConn: c, s: s}, nil
}

func checkFamily(network string, a netip.Addr) error {
	switch {
	case network == "tcp4" || network == "udp4":
		if !a.Is4() {
			return fmt.Errorf("netstack: %s needs an IPv4 address, got %v", network, a)
		}
	case network == "tcp6" || network == "udp6":
		if !a.Is6() {
			return fmt.Errorf("netstack: %s needs an IPv6 address, got %v", network, a)
		}
	}
	return nil
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{
		NIC:  nicID,
		Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()),
		Port: ap.Port(),
	}, proto
}

// listenAddr maps ap to a bind address. Unspecified IPv6 (or no address)
// binds a dual-stack IPv6 endpoint, which gVisor lets accept IPv4 too
// (v4-mapped) since V6Only is off by default, as on Linux.
func listenAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	switch {
	case !a.IsValid() || a == netip.IPv6Unspecified():
		return tcpip.FullAddress{NIC: nicID, Port: ap.Port()}, ipv6.ProtocolNumber
	case a == netip.IPv4Unspecified():
		return tcpip.FullAddress{NIC: nicID, Port: ap.Port()}, ipv4.ProtocolNumber
	}
	return fullAddr(netip.AddrPortFrom(a, ap.Port()))
}
