// Package turnclient is the TURN client (RFC 8656) a node uses when no
// direct path to a peer works: an allocation on one of the relays its map
// names (Allocate), over UDP, TCP or TLS (trusting exactly the relay's
// pin), whose relayed UDP address forwards peers' packets to the node.
//
// The allocation and its permissions are pion/turn's client; the receive
// side is this package's own batched reader (inbound.go: recvmmsg and UDP
// GRO on UDP), which decodes ChannelData and Data indications without
// pion's per-packet copies. Its API speaks netip.AddrPort and wire.Relay,
// never pion's or net's address types. Sockets come from Config.Dial and
// Config.ListenPacket (default: the host's network), so a test can carry
// the client's traffic over a transport of its own (in memory, or through
// a simulated NAT) to the relay.
//
// Probe (DialProbe) is a second, plain client for checks and tests
// (netcheck, attacker fixtures): pion's own read loop, one allocation.
package turnclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"

	"github.com/agentnet/agentnet/relay/internal/pionlog"
	"github.com/agentnet/agentnet/relay/internal/udpbatch"
	"github.com/agentnet/agentnet/wire"
)

// DefaultTimeout is Config.Timeout's default.
const DefaultTimeout = 5 * time.Second

// Config configures Allocate and DialProbe.
type Config struct {
	// Relay is required: the relay as the network map names it, with this
	// node's TURN REST credential.
	Relay wire.Relay
	// Transport is required: wire.TransportUDP, TransportTCP or
	// TransportTLS. The relay must list an address for it. TLS verifies
	// the relay's certificate against Relay.TLSPin (required for TLS).
	Transport string
	// Timeout is optional, default DefaultTimeout: how long connecting
	// and the Allocate transaction may take. A UDP relay that does not
	// answer within it is treated as unreachable (UDP blocked).
	Timeout time.Duration
	// Logger is optional. Default: slog.Default() for Allocate, discard
	// for DialProbe.
	Logger *slog.Logger
	// Dial is optional: how TCP and TLS connect to the relay (network
	// "tcp"; TLS runs over the returned conn). Default: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket is optional: the UDP socket towards the relay (network
	// "udp", addr the unspecified address of the relay's family, port 0).
	// A *net.UDPConn gets large buffers and batched reads; any other
	// PacketConn is read one datagram at a time, and its ReadFrom must
	// return *net.UDPAddr sources. Default: net.ListenConfig.
	ListenPacket func(ctx context.Context, network, addr string) (net.PacketConn, error)
	// ProbeInterval is optional, for Allocate: while nothing arrives
	// from the relay, the allocation is probed this often, and Dead is
	// closed when a probe gets no answer within ProbeTimeout (see
	// liveness.go). Default DefaultProbeInterval; negative: no probes.
	ProbeInterval time.Duration
	// ProbeTimeout is optional: see ProbeInterval. Default
	// DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// Now is optional: the clock every time read here goes through: the
	// check that Relay's credential has not expired (Relay.Expires; zero:
	// not checked), done before anything is sent. Default time.Now.
	Now func() time.Time
}

// ErrCredentialExpired means Config.Relay's credential expired by
// Config.Now: the map it came from is stale, and the relay would refuse it.
var ErrCredentialExpired = errors.New("relay credential expired")

// setDefaults fills in the optional fields and checks the required ones;
// it returns the relay's address for Transport.
func (cfg *Config) setDefaults(log *slog.Logger) (netip.AddrPort, error) {
	if cfg.Logger == nil {
		cfg.Logger = log
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	if cfg.ListenPacket == nil {
		var lc net.ListenConfig
		cfg.ListenPacket = lc.ListenPacket
	}
	var server netip.AddrPort
	for _, a := range cfg.Relay.Addrs {
		if a.Transport == cfg.Transport {
			server = a.Addr
			break
		}
	}
	if !server.IsValid() {
		return server, fmt.Errorf("turnclient: %s has no %s address; check its relay.cred", cfg.Relay.Name, cfg.Transport)
	}
	if cfg.Transport == wire.TransportTLS && cfg.Relay.TLSPin == "" {
		return server, fmt.Errorf("turnclient: %s: TLS needs the relay's certificate pin (tls_pin)", cfg.Relay.Name)
	}
	if exp := cfg.Relay.Expires; !exp.IsZero() && !cfg.Now().Before(exp) {
		return server, fmt.Errorf("turnclient: %s: %w at %s; the map is stale", cfg.Relay.Name, ErrCredentialExpired, exp.UTC().Format(time.RFC3339))
	}
	return netip.AddrPortFrom(server.Addr().Unmap(), server.Port()), nil
}

// Allocation is one TURN allocation (RFC 5766) on a relay: a UDP relayed
// address on the relay whose traffic reaches this node over Transport.
//
// Concurrency: WriteTo, Permit and ReadFrom may be called concurrently;
// ReadFrom from one goroutine at a time. Close ends the receive loop and
// waits for it, and makes blocked and later ReadFrom calls return
// net.ErrClosed. The allocation and its permissions
// are refreshed in the background (pion/turn's timers); Dead is closed
// when the relay can no longer be reached (stream closed, a refresh
// failed, or a quiet allocation's probe went unanswered: liveness.go),
// after which the caller should Close and allocate again.
type Allocation struct {
	relay     wire.Relay
	transport string
	client    *turn.Client
	conn      net.PacketConn // relayed conn: payloads to and from peers
	base      net.PacketConn // socket or stream towards the relay
	relayed   netip.AddrPort
	server    netip.AddrPort // where the relay's frames come from (UDP)
	log       *slog.Logger

	// The receive side (inbound.go): readLoop fills rx from free,
	// ReadFrom hands out cur and returns it to free.
	batch     *udpbatch.Conn // UDP on a *net.UDPConn only
	udp       bool           // the transport is UDP: only the relay's datagrams count
	readMsgs  int            // messages per read
	readBuf   int            // bytes per message
	chans     atomic.Pointer[channelFinder]
	rx, free  chan *rxBatch
	loopDone  chan struct{} // closed when readLoop returned
	closing   chan struct{} // closed by Close (and a failed Allocate)
	pending   atomic.Bool   // readLoop holds packets it could not queue
	readErr   error         // why readLoop returned; read after loopDone
	cur       *rxBatch      // only ReadFrom
	curI      int
	rxDrops   atomic.Uint64
	rxForeign atomic.Uint64 // UDP datagrams not from the relay

	closed   atomic.Bool
	deadOnce sync.Once
	dead     chan struct{}

	rxSeen  atomic.Bool                // readLoop got frames since watch's last tick
	probeIP atomic.Pointer[netip.Addr] // see probe
	watchWG sync.WaitGroup             // watch and its probe in flight
}

// Allocate connects to cfg.Relay over cfg.Transport, authenticates with the
// relay credential and allocates a relayed UDP address.
func Allocate(ctx context.Context, cfg Config) (*Allocation, error) {
	server, err := cfg.setDefaults(slog.Default())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	a := &Allocation{relay: cfg.Relay, transport: cfg.Transport, dead: make(chan struct{}),
		server: server,
		log:    cfg.Logger.With("relay", cfg.Relay.Name, "endpoint", server, "transport", cfg.Transport)}
	base, err := cfg.dial(ctx, server)
	if err != nil {
		return nil, fmt.Errorf("turnclient: connect to %s (%s %s): %w", cfg.Relay.Name, cfg.Transport, server, err)
	}
	a.base = &watchedConn{PacketConn: base, onErr: a.markDead, closed: &a.closed}
	a.client, err = turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server.String(),
		TURNServerAddr: server.String(),
		Username:       cfg.Relay.Username,
		Password:       cfg.Relay.Password,
		Conn:           a.base,
		LoggerFactory: pionlog.Factory{Log: a.log, Client: true, OnWarn: func(msg string) bool {
			if strings.Contains(msg, "Failed to refresh allocation") {
				a.markDead(errors.New(msg))
				return true
			}
			return false
		}},
	})
	if err != nil {
		base.Close()
		return nil, fmt.Errorf("turnclient: %s: %w", cfg.Relay.Name, err)
	}
	uc, _ := base.(*net.UDPConn)
	a.startReading(uc, cfg.Transport == wire.TransportUDP) // instead of a.client.Listen
	type result struct {
		pc  net.PacketConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		pc, err := a.client.Allocate()
		done <- result{pc, err}
	}()
	select {
	case r := <-done:
		err = r.err
		a.conn = r.pc
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		a.closed.Store(true)
		close(a.closing)
		a.client.Close()
		base.Close() // ends the transaction if it is still waiting, and readLoop
		<-a.loopDone
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v (%s blocked?)", cfg.Timeout, cfg.Transport)
		}
		return nil, fmt.Errorf("turnclient: allocate on %s via %s %s: %w", cfg.Relay.Name, cfg.Transport, server, err)
	}
	ua, _ := a.conn.LocalAddr().(*net.UDPAddr)
	if ua == nil {
		a.Close()
		return nil, fmt.Errorf("turnclient: allocate on %s: relayed address %v is not UDP", cfg.Relay.Name, a.conn.LocalAddr())
	}
	f, ok := a.conn.(channelFinder)
	if !ok {
		a.Close()
		return nil, fmt.Errorf("turnclient: allocate on %s: pion's relayed conn %T has no channel table", cfg.Relay.Name, a.conn)
	}
	a.chans.Store(&f)
	ap := ua.AddrPort()
	a.relayed = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	a.log.Debug("relay allocation", "path", a.relayed)
	if cfg.ProbeInterval > 0 {
		a.watchWG.Add(1)
		go a.watch(cfg.ProbeInterval, cfg.ProbeTimeout)
	}
	return a, nil
}

// dial opens the socket or stream towards the relay at server: a UDP
// socket (cfg.ListenPacket), or a TCP or TLS stream (cfg.Dial) framed as
// STUN messages.
func (cfg *Config) dial(ctx context.Context, server netip.AddrPort) (net.PacketConn, error) {
	switch cfg.Transport {
	case wire.TransportUDP:
		la := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		if server.Addr().Is6() {
			la = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
		pc, err := cfg.ListenPacket(ctx, "udp", la.String())
		if err != nil {
			return nil, err
		}
		if uc, ok := pc.(*net.UDPConn); ok {
			udpbatch.Tune(uc) // relayed bursts arrive here: the default ~200 KiB drops them
		}
		return pc, nil
	case wire.TransportTCP:
		c, err := cfg.Dial(ctx, "tcp", server.String())
		if err != nil {
			return nil, err
		}
		return turn.NewSTUNConn(c), nil
	case wire.TransportTLS:
		c, err := cfg.Dial(ctx, "tcp", server.String())
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, wire.PinnedTLSConfigFor(cfg.Relay.TLSPin, ErrPinMismatch, ""))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return turn.NewSTUNConn(tc), nil
	}
	return nil, fmt.Errorf("unknown transport %q (want udp, tcp or tls)", cfg.Transport)
}

// ErrPinMismatch means a relay's TLS certificate is not the pinned one.
// The relay's certificate is self-signed; TLS trusts exactly the pin that
// comes in the signed map (wire.PinnedTLSConfigFor).
var ErrPinMismatch = errors.New("relay certificate does not match the pin")

// RelayedAddr is the UDP address on the relay that forwards to this node.
func (a *Allocation) RelayedAddr() netip.AddrPort { return a.relayed }

// Transport is how this node reaches the relay: udp, tcp or tls.
func (a *Allocation) Transport() string { return a.transport }

// Relay is the relay the allocation lives on.
func (a *Allocation) Relay() wire.Relay { return a.relay }

// Dead is closed once the allocation stopped working (see Allocation).
func (a *Allocation) Dead() <-chan struct{} { return a.dead }

func (a *Allocation) markDead(err error) {
	if a.closed.Load() {
		return
	}
	a.deadOnce.Do(func() {
		a.log.Warn("relay allocation lost; allocate again", "err", err)
		close(a.dead)
	})
}

// WriteTo sends p from the relayed address to the peer address to. The
// first packet to a new IP installs a permission first (RFC 5766 §9).
func (a *Allocation) WriteTo(p []byte, to netip.AddrPort) error {
	if a.closed.Load() {
		return net.ErrClosed
	}
	if _, err := a.conn.WriteTo(p, net.UDPAddrFromAddrPort(to)); err != nil {
		return fmt.Errorf("turnclient: send via %s to %s: %w", a.relay.Name, to, err)
	}
	return nil
}

// Permit lets the given IPs send to the relayed address before this node
// has sent to them (CreatePermission, RFC 5766 §9). Permissions are per
// IP and refreshed in the background.
func (a *Allocation) Permit(ips ...netip.Addr) error {
	if a.closed.Load() {
		return net.ErrClosed
	}
	if len(ips) == 0 {
		return nil
	}
	addrs := make([]net.Addr, len(ips))
	for i, ip := range ips {
		addrs[i] = &net.UDPAddr{IP: ip.AsSlice()}
	}
	if err := a.client.CreatePermission(addrs...); err != nil {
		return fmt.Errorf("turnclient: permit %v on %s: %w", ips, a.relay.Name, err)
	}
	a.setProbeIP(ips[len(ips)-1])
	return nil
}

// Close releases the allocation (a Refresh with lifetime 0, not waited
// for) and closes the connection to the relay. Idempotent.
func (a *Allocation) Close() error {
	if a.closed.Swap(true) {
		return nil
	}
	close(a.closing)
	if a.conn != nil {
		_ = a.conn.Close()
	}
	a.client.Close() // ends a probe's transaction
	err := a.base.Close()
	<-a.loopDone
	a.watchWG.Wait()
	return err
}

// watchedConn reports read errors of the connection towards the relay (a
// TCP/TLS stream that ended) once.
type watchedConn struct {
	net.PacketConn
	onErr  func(error)
	closed *atomic.Bool
}

func (c *watchedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := c.PacketConn.ReadFrom(p)
	if err != nil && !c.closed.Load() {
		c.onErr(err)
	}
	return n, from, err
}
