package relay

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"

	"github.com/agentnet/agentnet/internal/atomicfile"
	"github.com/agentnet/agentnet/internal/logthrottle"
	"github.com/agentnet/agentnet/relay/internal/pionlog"
	"github.com/agentnet/agentnet/relay/internal/udpbatch"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
)

// Defaults of Config.
const (
	DefaultMaxAllocationsPerUser = 8
	// DefaultBandwidthPerUser is 100 Mbit/s per node, both directions
	// together: plenty for a relayed agent, and one node cannot fill a
	// small relay's uplink alone.
	DefaultBandwidthPerUser = 12_500_000
	// Realm is the TURN realm (RFC 8489 §14.9) of every agentnet relay.
	Realm = "agentnet"
	// DefaultMaxCredentialTTL bounds how far ahead a credential's expiry
	// may lie. Coordinators mint credentials valid for at most an hour
	// (coordinator/relays.go); the second hour is slack for clock skew.
	// It is also the bound on how long a revoked node's credential keeps
	// working here: the relay learns revocations by expiry.
	DefaultMaxCredentialTTL = 2 * time.Hour
	// DefaultHostAddrRefresh is how often the host's addresses are
	// enumerated again (see Config.HostAddrs).
	DefaultHostAddrRefresh = 30 * time.Second
	// DefaultClientWriteTimeout bounds one write to a TCP or TLS client.
	DefaultClientWriteTimeout = 2 * time.Second
)

// maxTCPConns bounds concurrent TCP and TLS connections per listener.
const maxTCPConns = 4096

// closeWait bounds how long Close waits for pion's goroutines.
const closeWait = 2 * time.Second

// inboundMTU is the largest TURN message read from a client: a WireGuard
// packet of an overlay MTU up to 1500 plus IP/UDP-less TURN framing.
const inboundMTU = 1700

// Config configures a relay Server. Zero optional fields take their default.
type Config struct {
	// Name is optional: the relay's name in relay.cred, maps and logs.
	// Default: the host name.
	Name string
	// Listen is required: the address served on UDP and TCP (same port),
	// such as "0.0.0.0:3478" or "127.0.0.1:0" (tests; a free port).
	Listen string
	// TLSListen is optional: an address for TURN over TLS (TCP), such as
	// ":5349". Default: no TLS. The certificate is self-signed, made on
	// first start in DataDir and reused; nodes trust it by its pin.
	TLSListen string
	// PublicIP is optional: the IPv4 address written into relay.cred and
	// used as the relayed address of every allocation. Default: the Listen
	// IP; required when Listen is an unspecified address.
	PublicIP netip.Addr
	// DataDir is required: created 0700; holds relay.secret (unless
	// SecretFile), relay.cred, tls.key and tls.crt.
	DataDir string
	// SecretFile is optional: the shared secret (base64, at least 16
	// bytes) the coordinator signs credentials with. Default
	// DataDir/relay.secret, 32 random bytes generated on first start.
	SecretFile string
	// Deny is optional: peer prefixes never relayed to, on top of the
	// built-in refusals (see peerRefusal). Deny wins over Allow.
	Deny []netip.Prefix
	// Allow is optional, for labs and private deployments: peer prefixes
	// relayed to although they are special-purpose (RFC 1918, CGNAT,
	// loopback, benchmarking, ...) or the relay host's own addresses; the
	// relay's listener ports stay refused. Default none: the relay
	// reaches only public IPv4 unicast addresses and its own allocations.
	Allow []netip.Prefix
	// AllowLoopback is optional, ONLY for single-machine demos and tests:
	// the same as Allow with 127.0.0.0/8 and ::1. Default false.
	AllowLoopback bool
	// HostAddrs is optional: the relay host's addresses, refused as peers
	// (they reach services on the host), listed at start and every
	// HostAddrRefresh. Default: every interface address (net.InterfaceAddrs).
	HostAddrs func() ([]netip.Addr, error)
	// HostAddrRefresh is optional: how often HostAddrs is called again.
	// Default DefaultHostAddrRefresh.
	HostAddrRefresh time.Duration
	// MaxCredentialTTL is optional: credentials whose expiry lies further
	// ahead are refused (a leaked long-lived credential, or one minted to
	// outlive a revocation). Default DefaultMaxCredentialTTL.
	MaxCredentialTTL time.Duration
	// AuthLimit is optional: the per-source limit on failed
	// authentications. Zero fields take the defaults of AuthLimit.
	AuthLimit AuthLimit
	// ClientWriteTimeout is optional: a TCP or TLS client whose socket
	// accepts no data for this long (it stopped reading) is dropped, so
	// that the allocation relaying to it does not stall. Default
	// DefaultClientWriteTimeout.
	ClientWriteTimeout time.Duration
	// MaxAllocationsPerUser is optional: live allocations per node.
	// Default DefaultMaxAllocationsPerUser.
	MaxAllocationsPerUser int
	// BandwidthPerUser is optional: bytes/s relayed per node, both
	// directions together; packets over it are dropped. Default
	// DefaultBandwidthPerUser; negative: unlimited.
	BandwidthPerUser int64
	// Logger is optional. Default: discard.
	Logger *slog.Logger
	// Now is optional: the clock for credential expiry, bandwidth limits,
	// refusal log throttling and the TLS certificate's validity. Default
	// time.Now.
	Now func() time.Time
}

// Server is a running TURN/STUN relay (pion/turn): TURN over UDP, TCP and
// optionally TLS with TURN REST credentials, STUN binding on the UDP port
// and on a second "STUN alt" UDP port. Its methods are safe for concurrent
// use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	secret    []byte
	bandwidth int64 // bytes/s; 0: unlimited

	publicIP    netip.Addr
	relayBindIP netip.Addr              // where relayed sockets are bound
	fixedAddrs  []netip.Addr            // the listeners' specific IPs, always in hostAddrs
	hostAddrs   atomic.Pointer[addrSet] // the relay host's addresses (see peerRefusal); replaced by refreshHostAddrs
	listenPorts map[uint16]bool         // ports of the relay's own listeners
	authLim     *authLimiter
	done        chan struct{} // closed by Close: ends watchHostAddrs

	turn     *turn.Server
	udp      *net.UDPConn
	udpOut   *udpbatch.Conn // batched sends on udp to clients (relayConn.queue); nil on IPv6
	alt      *net.UDPConn
	tcp      *trackedListener
	tlsLn    *trackedListener
	cred     turncred.Cred
	credPath string

	stats   counters
	limiter logthrottle.Limiter
	wg      sync.WaitGroup // relayed sockets, TCP/TLS connections, the STUN alt loop

	closeOnce sync.Once

	// Lock order: none. clientsMu, mu, stats.mu, a relayConn's wmu and a
	// trackedListener's mu are each taken alone, never one inside another.
	clientsMu sync.RWMutex                  // guards clients
	clients   map[netip.AddrPort]*relayConn // UDP allocations by client address

	mu     sync.Mutex // guards the fields below
	closed bool
	allocs map[uint16]*relayConn // by relayed port
	users  map[string]*user      // by node name
}

// New starts a relay: it binds every listener, writes DataDir/relay.cred
// and serves until Close. ctx bounds only the start.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.DataDir == "" {
		return nil, errors.New("relay: Config.DataDir is required")
	}
	if cfg.Listen == "" {
		return nil, errors.New("relay: Config.Listen is required (e.g. 0.0.0.0:3478)")
	}
	if cfg.Name == "" {
		if cfg.Name, err = os.Hostname(); err != nil || cfg.Name == "" {
			cfg.Name = "relay"
		}
	}
	if cfg.MaxAllocationsPerUser == 0 {
		cfg.MaxAllocationsPerUser = DefaultMaxAllocationsPerUser
	} else if cfg.MaxAllocationsPerUser < 0 {
		return nil, fmt.Errorf("relay: MaxAllocationsPerUser %d is negative", cfg.MaxAllocationsPerUser)
	}
	if cfg.BandwidthPerUser == 0 {
		cfg.BandwidthPerUser = DefaultBandwidthPerUser
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SecretFile == "" {
		cfg.SecretFile = filepath.Join(cfg.DataDir, fileSecret)
	}
	for _, p := range cfg.Deny {
		if !p.IsValid() {
			return nil, fmt.Errorf("relay: Deny prefix %v is invalid", p)
		}
	}
	for _, p := range cfg.Allow {
		if !p.IsValid() {
			return nil, fmt.Errorf("relay: Allow prefix %v is invalid", p)
		}
	}
	if cfg.HostAddrs == nil {
		cfg.HostAddrs = interfaceAddrs
	}
	if cfg.HostAddrRefresh <= 0 {
		cfg.HostAddrRefresh = DefaultHostAddrRefresh
	}
	if cfg.MaxCredentialTTL == 0 {
		cfg.MaxCredentialTTL = DefaultMaxCredentialTTL
	} else if cfg.MaxCredentialTTL < 0 {
		return nil, fmt.Errorf("relay: MaxCredentialTTL %v is negative", cfg.MaxCredentialTTL)
	}
	if cfg.ClientWriteTimeout == 0 {
		cfg.ClientWriteTimeout = DefaultClientWriteTimeout
	} else if cfg.ClientWriteTimeout < 0 {
		return nil, fmt.Errorf("relay: ClientWriteTimeout %v is negative", cfg.ClientWriteTimeout)
	}
	authLim, err := newAuthLimiter(cfg.AuthLimit)
	if err != nil {
		return nil, err
	}
	listenAP, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("relay: Listen %q is not IP:port: %w", cfg.Listen, err)
	}
	listenIP := listenAP.Addr().Unmap()
	s := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		now:         cfg.Now,
		bandwidth:   max(cfg.BandwidthPerUser, 0),
		publicIP:    cfg.PublicIP.Unmap(),
		listenPorts: make(map[uint16]bool),
		authLim:     authLim,
		done:        make(chan struct{}),
		limiter:     logthrottle.Limiter{Interval: 10 * time.Second},
		allocs:      make(map[uint16]*relayConn),
		users:       make(map[string]*user),
		clients:     make(map[netip.AddrPort]*relayConn),
	}
	if !s.publicIP.IsValid() {
		if listenIP.IsUnspecified() {
			return nil, fmt.Errorf("relay: Listen %s is an unspecified address: set PublicIP (--public-ip), the address nodes reach this relay at", cfg.Listen)
		}
		s.publicIP = listenIP
	}
	if !s.publicIP.Is4() || s.publicIP.IsUnspecified() {
		return nil, fmt.Errorf("relay: PublicIP %v must be a usable IPv4 address (relayed addresses are IPv4)", s.publicIP)
	}
	s.relayBindIP = netip.IPv4Unspecified()
	if listenIP.Is4() && !listenIP.IsUnspecified() {
		s.relayBindIP = listenIP
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: create data dir: %w", err)
	}
	if s.secret, err = loadOrCreateSecret(cfg.SecretFile); err != nil {
		return nil, err
	}

	var pcs []turn.PacketConnConfig
	var lcs []turn.ListenerConfig
	defer func() {
		if err != nil {
			for _, pc := range pcs {
				pc.PacketConn.Close()
			}
			for _, lc := range lcs {
				lc.Listener.Close()
			}
			if s.alt != nil {
				s.alt.Close()
			}
		}
	}()
	gen := relayAddrs{s}
	s.udp, s.tcp, err = listenUDPAndTCP(listenAP)
	if err != nil {
		return nil, err
	}
	udpbatch.Tune(s.udp)
	if listenIP.Is4() {
		s.udpOut = udpbatch.New(s.udp, false)
	}
	s.tcp.s = s
	pcs = append(pcs, turn.PacketConnConfig{PacketConn: turnSocket{UDPConn: s.udp, s: s}, RelayAddressGenerator: gen, PermissionHandler: s.permit})
	lcs = append(lcs, turn.ListenerConfig{Listener: s.tcp, RelayAddressGenerator: gen, PermissionHandler: s.permit})
	port := s.udp.LocalAddr().(*net.UDPAddr).Port
	s.cred = turncred.Cred{
		Name:   cfg.Name,
		Secret: s.secret,
		Addrs: []wire.RelayAddr{
			{Transport: wire.TransportUDP, Addr: netip.AddrPortFrom(s.publicIP, uint16(port))},
			{Transport: wire.TransportTCP, Addr: netip.AddrPortFrom(s.publicIP, uint16(port))},
		},
	}
	s.listenPorts[uint16(port)] = true

	// The STUN alt port: the TLS port number on UDP, else Listen's port+1
	// (any free port when Listen's port is 0).
	altAP := netip.AddrPortFrom(listenAP.Addr(), 0)
	if listenAP.Port() != 0 {
		altAP = netip.AddrPortFrom(listenAP.Addr(), listenAP.Port()+1)
	}
	if cfg.TLSListen != "" {
		tlsAP, err := parseListen(cfg.TLSListen)
		if err != nil {
			return nil, fmt.Errorf("relay: TLSListen %q: %w", cfg.TLSListen, err)
		}
		cert, pin, err := loadOrCreateCert(cfg.DataDir, cfg.Name, s.now)
		if err != nil {
			return nil, err
		}
		var udpAlt *net.UDPConn
		udpAlt, s.tlsLn, err = listenUDPAndTCP(tlsAP)
		if err != nil {
			return nil, fmt.Errorf("relay: TLS listener and STUN alt port: %w", err)
		}
		s.tlsLn.s = s
		s.alt = udpAlt
		tlsPort := uint16(s.tlsLn.Addr().(*net.TCPAddr).Port)
		s.listenPorts[tlsPort] = true
		lcs = append(lcs, turn.ListenerConfig{
			Listener: tls.NewListener(s.tlsLn, &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{cert},
			}),
			RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
		s.cred.TLSPin = pin
		s.cred.Addrs = append(s.cred.Addrs, wire.RelayAddr{Transport: wire.TransportTLS, Addr: netip.AddrPortFrom(s.publicIP, tlsPort)})
	} else {
		if s.alt, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(altAP)); err != nil {
			return nil, fmt.Errorf("relay: STUN alt port %v: %w (it is the Listen port + 1 when there is no TLS listener)", altAP, err)
		}
	}
	udpbatch.Tune(s.alt)
	altPort := uint16(s.alt.LocalAddr().(*net.UDPAddr).Port)
	s.listenPorts[altPort] = true
	s.cred.STUNAlt = netip.AddrPortFrom(s.publicIP, altPort)

	for _, ip := range []netip.Addr{listenIP, s.tlsAddr()} {
		if ip.IsValid() && !ip.IsUnspecified() {
			s.fixedAddrs = append(s.fixedAddrs, ip.Unmap())
		}
	}
	s.refreshHostAddrs()

	s.credPath = filepath.Join(cfg.DataDir, fileCred)
	b, err := json.MarshalIndent(s.cred, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(s.credPath, append(b, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("relay: write %s: %w", s.credPath, err)
	}

	s.turn, err = turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: pcs,
		ListenerConfigs:   lcs,
		LoggerFactory:     pionlog.Factory{Log: s.log},
		Realm:             Realm,
		AuthHandler:       s.auth,
		QuotaHandler:      s.quota,
		InboundMTU:        inboundMTU,
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("relay: start TURN server: %w", err)
	}
	s.wg.Add(2)
	go s.serveSTUNAlt(s.alt)
	go s.watchHostAddrs()
	s.log.Info("relay: serving", "relay", cfg.Name, "endpoint", s.udp.LocalAddr().String(), "addrs", s.cred.Addrs,
		"stun_alt", s.cred.STUNAlt, "tls_pin", s.cred.TLSPin, "allow_loopback", cfg.AllowLoopback, "allow", cfg.Allow)
	return s, nil
}

// parseListen parses "IP:port" or ":port" (all IPv4 addresses).
func parseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return netip.ParseAddrPort(net.JoinHostPort(host, port))
}

// listenUDPAndTCP binds UDP and TCP on the same port of ap; with port 0 it
// retries until a free port is free on both.
func listenUDPAndTCP(ap netip.AddrPort) (*net.UDPConn, *trackedListener, error) {
	network := "4"
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		network = "6"
	}
	var lastErr error
	for range 20 {
		uc, err := net.ListenUDP("udp"+network, net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, fmt.Errorf("relay: listen udp %v: %w", ap, err)
		}
		port := uc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.ListenTCP("tcp"+network, &net.TCPAddr{IP: ap.Addr().AsSlice(), Port: port})
		if err == nil {
			tap, _ := netip.ParseAddrPort(ln.Addr().String())
			return uc, &trackedListener{Listener: ln, addr: tap, conns: make(map[*trackedConn]struct{})}, nil
		}
		uc.Close()
		lastErr = err
		if ap.Port() != 0 {
			break
		}
	}
	return nil, nil, fmt.Errorf("relay: listen tcp %v: %w", ap, lastErr)
}

// tlsAddr is the TLS listener's IP, if any.
func (s *Server) tlsAddr() netip.Addr {
	if s.tlsLn == nil {
		return netip.Addr{}
	}
	return s.tlsLn.addr.Addr()
}

// auth is pion's AuthHandler for TURN REST credentials: it refuses
// sources in back-off after repeated bad passwords (even with a correct
// one: a guess that succeeds during the back-off tells nothing), malformed
// usernames, expired credentials and credentials expiring more than
// MaxCredentialTTL ahead, and returns the long-term key (RFC 8489 §9.2.2)
// of the password the coordinator derived from the shared secret.
func (s *Server) auth(username, realm string, src net.Addr) ([]byte, bool) {
	now := s.now()
	if s.authLim.blocked(srcIP(src), now) {
		s.refuse(ReasonAuthThrottled, "endpoint", srcIP(src).String())
		return nil, false
	}
	exp, name, err := turncred.ParseUsername(username)
	if err != nil {
		s.authLim.fail(srcIP(src), now)
		s.refuse(ReasonBadUsername, "endpoint", src.String(), "err", err)
		return nil, false
	}
	if !now.Before(exp) {
		s.refuse(ReasonExpired, "node", name, "endpoint", src.String(), "expired", exp.UTC())
		return nil, false
	}
	if exp.Sub(now) > s.cfg.MaxCredentialTTL {
		s.authLim.fail(srcIP(src), now)
		s.refuse(ReasonTooLong, "node", name, "endpoint", src.String(), "expires", exp.UTC())
		return nil, false
	}
	return turn.GenerateAuthKey(username, realm, turncred.Password(s.secret, username)), true
}

// onAuth counts requests whose message integrity failed, a wrong
// password, and charges them to the source's failure budget.
func (s *Server) onAuth(src, _ net.Addr, _, username, _, method string, verdict bool) {
	if !verdict {
		_, name, _ := turncred.ParseUsername(username)
		if s.authLim.fail(srcIP(src), s.now()) {
			s.log.Warn("relay: source in back-off after repeated bad passwords", "relay", s.cfg.Name,
				"endpoint", srcIP(src).String(), "node", name, "backoff", s.authLim.cfg.Backoff)
		}
		s.refuse(ReasonBadPassword, "node", name, "endpoint", src.String(), "method", method)
	}
}

// srcIP is the IP of a client address (pion gives *net.UDPAddr or
// *net.TCPAddr); the zero Addr for anything else.
func srcIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// refuse counts a refusal and logs it, once per (reason, first attr value)
// per interval.
func (s *Server) refuse(reason string, attrs ...any) {
	s.stats.refuse(reason)
	key := reason
	if len(attrs) >= 2 {
		key += "|" + fmt.Sprint(attrs[1])
	}
	if !s.limiter.Allow(key, s.now()) {
		s.stats.logsSuppressed.Add(1)
		return
	}
	s.log.Warn("relay: refused", append([]any{"reason", reason, "relay", s.cfg.Name}, attrs...)...)
}

// Cred returns the relay's credential (also written to CredPath).
func (s *Server) Cred() turncred.Cred { return s.cred }

// CredPath returns the path of relay.cred.
func (s *Server) CredPath() string { return s.credPath }

// Addrs returns the relay's advertised addresses (PublicIP with the bound
// ports), as in relay.cred.
func (s *Server) Addrs() []wire.RelayAddr { return append([]wire.RelayAddr(nil), s.cred.Addrs...) }

// STUNAlt returns the advertised STUN alt address.
func (s *Server) STUNAlt() netip.AddrPort { return s.cred.STUNAlt }

// Close stops every listener, ends every allocation and TCP/TLS connection
// and waits (up to a couple of seconds) for their goroutines. Calling it
// again returns nil.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
		err = s.turn.Close() // closes the UDP socket and listeners; pion then closes allocations
		s.alt.Close()
		s.tcp.closeAll()
		if s.tlsLn != nil {
			s.tlsLn.closeAll()
		}
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(closeWait):
			s.log.Warn("relay: allocations still closing after close")
		}
		s.log.Info("relay: closed", "relay", s.cfg.Name)
	})
	return err
}

// Stats is a snapshot of the relay's counters.
type Stats struct {
	Allocations      int64             // live allocations
	AllocationsTotal uint64            // allocations made since start
	Refused          map[string]uint64 // by Reason*; bandwidth drops are under ReasonBandwidth
	BytesToPeers     uint64            // relayed from clients to peers
	BytesFromPeers   uint64            // relayed from peers to clients
	STUNAltAnswered  uint64            // binding requests answered on the STUN alt port
	PeerTruncated    uint64            // datagrams from peers too large for a relayed socket's buffer, dropped
	ClientSendErrors uint64            // failed batched sends of relayed frames to clients
	LogsSuppressed   uint64            // refusal log lines rate-limited away
}

type counters struct {
	allocations                  atomic.Int64
	allocationsTotal             atomic.Uint64
	bytesToPeers, bytesFromPeers atomic.Uint64
	bandwidthDrops               atomic.Uint64
	truncated, clientSendErrors  atomic.Uint64 // oversized datagrams from peers; failed sends to clients
	stunAlt, logsSuppressed      atomic.Uint64

	mu      sync.Mutex // guards refused
	refused map[string]uint64
}

func (c *counters) refuse(reason string) {
	c.mu.Lock()
	if c.refused == nil {
		c.refused = make(map[string]uint64)
	}
	c.refused[reason]++
	c.mu.Unlock()
}

// Stats returns a snapshot of the counters; safe for concurrent use.
func (s *Server) Stats() Stats {
	c := &s.stats
	c.mu.Lock()
	refused := maps.Clone(c.refused)
	c.mu.Unlock()
	if refused == nil {
		refused = map[string]uint64{}
	}
	if n := c.bandwidthDrops.Load(); n > 0 {
		refused[ReasonBandwidth] = n
	}
	return Stats{
		Allocations:      c.allocations.Load(),
		AllocationsTotal: c.allocationsTotal.Load(),
		Refused:          refused,
		BytesToPeers:     c.bytesToPeers.Load(),
		BytesFromPeers:   c.bytesFromPeers.Load(),
		STUNAltAnswered:  c.stunAlt.Load(),
		PeerTruncated:    c.truncated.Load(),
		ClientSendErrors: c.clientSendErrors.Load(),
		LogsSuppressed:   c.logsSuppressed.Load(),
	}
}

// trackedListener remembers accepted connections so Close can end them:
// pion's Server.Close closes listeners but not the connections they
// accepted, whose read loops would otherwise outlive it.
type trackedListener struct {
	net.Listener
	addr netip.AddrPort
	s    *Server

	mu    sync.Mutex // guards conns
	conns map[*trackedConn]struct{}
}

func (l *trackedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.s.mu.Lock()
		closed := l.s.closed
		if !closed {
			l.s.wg.Add(1)
		}
		l.s.mu.Unlock()
		if closed {
			c.Close()
			return nil, net.ErrClosed
		}
		tc := &trackedConn{Conn: c, l: l}
		l.mu.Lock()
		full := len(l.conns) >= maxTCPConns
		if !full {
			l.conns[tc] = struct{}{}
		}
		l.mu.Unlock()
		if full {
			c.Close()
			l.s.wg.Done()
			l.s.refuse(ReasonTCPConns, "endpoint", c.RemoteAddr().String())
			continue
		}
		return tc, nil
	}
}

// closeAll closes every accepted connection's socket; pion's read loops
// then return and call trackedConn.Close.
func (l *trackedListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *trackedListener
	once sync.Once
}

// Write writes with a deadline of ClientWriteTimeout: a client that stops
// reading fills its socket buffer, and without a deadline the allocation
// goroutine relaying to it would block for good, holding the connection
// and its allocation. On a timeout the client is dropped (its read loop
// then ends the connection) and counted.
func (c *trackedConn) Write(p []byte) (int, error) {
	s := c.l.s
	_ = c.Conn.SetWriteDeadline(time.Now().Add(s.cfg.ClientWriteTimeout))
	n, err := c.Conn.Write(p)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		s.refuse(ReasonSlowClient, "endpoint", c.RemoteAddr().String())
		c.Conn.Close()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.s.wg.Done()
	})
	return err
}
