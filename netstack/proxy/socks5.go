package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SOCKS5Config configures NewSOCKS5.
type SOCKS5Config struct {
	// Listen is the TCP address to serve on, e.g. "127.0.0.1:1080".
	// Required. UDP ASSOCIATE relays bind to the same IP.
	Listen string
	// Overlay is the node. Required.
	Overlay Overlay
	// AllowOutside lets clients reach destinations outside the overlay
	// through the host network. Optional; default false: such requests
	// get reply 0x02 (connection not allowed by ruleset).
	AllowOutside bool
	// HandshakeTimeout bounds the method negotiation and the request.
	// Optional; default DefaultHandshakeTimeout (10 s).
	HandshakeTimeout time.Duration
	// DialTimeout bounds resolving and dialing one destination.
	// Optional; default DefaultDialTimeout (30 s).
	DialTimeout time.Duration
	// MaxConnsPerSource caps the client connections from one source
	// address open at once; Accept resets (RST) and counts (ConnStats)
	// the ones beyond it. On a loopback listener every local program is
	// the same source. Optional; default DefaultMaxConnsPerSource (256);
	// negative is refused.
	MaxConnsPerSource int
	// MaxConns caps all client connections open at once, like
	// MaxConnsPerSource. Optional; default DefaultMaxConns (4096);
	// negative is refused.
	MaxConns int
	// Logger receives logs. Optional; default discards.
	Logger *slog.Logger
}

// SOCKS5 is a SOCKS version 5 server (RFC 1928, no authentication) that
// carries CONNECT and UDP ASSOCIATE to the overlay. BIND is not supported
// (reply 0x07).
type SOCKS5 struct {
	cfg    SOCKS5Config
	log    *slog.Logger
	ln     *limitListener
	r      router
	ctx    context.Context
	cancel context.CancelFunc
	t      tracker
	once   sync.Once
}

// NewSOCKS5 listens on cfg.Listen and starts serving.
func NewSOCKS5(cfg SOCKS5Config) (*SOCKS5, error) {
	if cfg.Overlay == nil {
		return nil, errors.New("proxy: socks5: Overlay is required")
	}
	if cfg.Listen == "" {
		return nil, errors.New("proxy: socks5: Listen is required")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	log := orDiscard(cfg.Logger).With("proxy", "socks5")
	lim, err := newLimiter(cfg.MaxConnsPerSource, cfg.MaxConns, log)
	if err != nil {
		return nil, fmt.Errorf("proxy: socks5: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxy: socks5: listen on %s: %w", cfg.Listen, err)
	}
	s := &SOCKS5{
		cfg: cfg,
		log: log,
		ln:  &limitListener{Listener: ln, lim: lim},
		r:   router{ov: cfg.Overlay, allowOutside: cfg.AllowOutside},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.t.start(func() { serveListener(s.ctx, &s.t, s.ln, s.log, s.handle) })
	return s, nil
}

// Addr returns the address the server listens on.
func (s *SOCKS5) Addr() net.Addr { return s.ln.Addr() }

// ConnStats returns the counters of client connections.
func (s *SOCKS5) ConnStats() ConnStats { return connStats(s.ln.lim) }

// Close stops the listener, closes every client connection, relay socket
// and destination connection, and waits for all goroutines.
func (s *SOCKS5) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.ln.Close()
	})
	s.t.close()
	return nil
}

// handle serves one client connection. Malformed input closes it (logged
// at Debug); it never affects other clients.
func (s *SOCKS5) handle(c net.Conn) {
	client := c.RemoteAddr().String()
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))

	// §3: VER NMETHODS METHODS...
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		s.log.Debug("handshake failed", "client", client, "err", err)
		return
	}
	if hdr[0] != socksVersion {
		s.log.Debug("handshake failed", "client", client, "reason", fmt.Sprintf("bad version %#x", hdr[0]))
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		s.log.Debug("handshake failed", "client", client, "err", err)
		return
	}
	if !strings.ContainsRune(string(methods), authNone) {
		c.Write([]byte{socksVersion, authNoAcceptable})
		s.log.Debug("handshake failed", "client", client, "reason", "client does not offer no-auth")
		return
	}
	if _, err := c.Write([]byte{socksVersion, authNone}); err != nil {
		return
	}

	// §4: VER CMD RSV ATYP DST.ADDR DST.PORT
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		s.log.Debug("request failed", "client", client, "err", err)
		return
	}
	if req[0] != socksVersion {
		s.log.Debug("request failed", "client", client, "reason", fmt.Sprintf("bad version %#x", req[0]))
		return
	}
	host, port, err := readAddr(c, req[3])
	if err != nil {
		if errors.Is(err, errAddrType) {
			writeReply(c, repAddrTypeNotSupport, nil)
		}
		s.log.Debug("request failed", "client", client, "err", err)
		return
	}
	switch req[1] {
	case cmdConnect:
		s.connect(c, host, port)
	case cmdUDPAssociate:
		s.associate(c, host, port)
	default:
		writeReply(c, repCmdNotSupported, nil)
		s.log.Debug("command not supported", "client", client, "reason", fmt.Sprintf("command %#x", req[1]))
	}
}

// connect serves CONNECT (§4, §6).
func (s *SOCKS5) connect(c net.Conn, host string, port uint16) {
	client := c.RemoteAddr().String()
	dest := net.JoinHostPort(host, fmt.Sprint(port))
	// The dial has its own timeout; the handshake deadline stops here.
	c.SetDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	tgt, err := s.r.route(ctx, host, port)
	if err != nil {
		rep := replyFor(err)
		s.logRefusal(client, dest, rep, err)
		writeReply(c, rep, nil)
		return
	}
	out, err := s.r.dial(ctx, "tcp", tgt)
	if err != nil {
		rep := replyFor(err)
		s.log.Info("connect failed", "client", client, "endpoint", dest, "err", err)
		writeReply(c, rep, nil)
		return
	}
	if !s.t.add(out) {
		out.Close()
		return
	}
	defer s.t.remove(out)
	if err := writeReply(c, repSucceeded, out.LocalAddr()); err != nil {
		out.Close()
		return
	}
	s.log.Debug("connect", "client", client, "endpoint", dest, "overlay", tgt.overlay)
	join(c, out)
}

func (s *SOCKS5) logRefusal(client, dest string, rep byte, err error) {
	switch rep {
	case repHostUnreachable:
		s.log.Info("unknown destination", "client", client, "endpoint", dest, "err", err)
	case repNotAllowed:
		s.log.Info("destination refused", "client", client, "endpoint", dest, "reason", "outside overlay")
	default:
		s.log.Info("destination failed", "client", client, "endpoint", dest, "err", err)
	}
}

// replyFor maps a routing or dial error to a §6 reply code.
func replyFor(err error) byte {
	var ne net.Error
	switch {
	case errors.Is(err, ErrOutside):
		return repNotAllowed
	case errors.Is(err, ErrUnknownName):
		return repHostUnreachable
	case errors.Is(err, syscall.ECONNREFUSED), strings.Contains(err.Error(), "connection refused"):
		return repConnRefused
	case errors.Is(err, syscall.ENETUNREACH), strings.Contains(err.Error(), "network is unreachable"):
		return repNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), strings.Contains(err.Error(), "no route to host"):
		return repHostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return repTTLExpired
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return repHostUnreachable
	}
	return repGeneralFailure
}

var errAddrType = errors.New("address type not supported")

// readAddr reads ATYP's DST.ADDR and DST.PORT (§4, §5). IPs come back as
// their string form, names as sent.
func readAddr(r io.Reader, atyp byte) (string, uint16, error) {
	var host string
	switch atyp {
	case atypIPv4, atypIPv6:
		n := 4
		if atyp == atypIPv6 {
			n = 16
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", 0, err
		}
		ip, _ := netip.AddrFromSlice(b)
		host = ip.String()
	case atypDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return "", 0, err
		}
		if l[0] == 0 {
			return "", 0, errors.New("empty domain name")
		}
		b := make([]byte, l[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return "", 0, err
		}
		host = string(b)
	default:
		return "", 0, fmt.Errorf("%w: %#x", errAddrType, atyp)
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return "", 0, err
	}
	return host, binary.BigEndian.Uint16(p[:]), nil
}

// appendAddr appends ATYP DST.ADDR DST.PORT for ap (an invalid ap is
// written as 0.0.0.0:0).
func appendAddr(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	switch {
	case ip.Is4():
		b = append(b, atypIPv4)
		b = append(b, ip.AsSlice()...)
	case ip.Is6():
		b = append(b, atypIPv6)
		b = append(b, ip.AsSlice()...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// addrPort converts a net.Addr to netip.AddrPort (invalid if it cannot).
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// writeReply writes a §6 reply with BND.ADDR bnd (may be nil).
func writeReply(c net.Conn, rep byte, bnd net.Addr) error {
	b := appendAddr([]byte{socksVersion, rep, 0x00}, addrPort(bnd))
	_, err := c.Write(b)
	return err
}
