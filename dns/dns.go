// Package dns is the node's built-in resolver for agent names. It answers
// A, AAAA and PTR for the agents of the current network map under one
// domain (default agents.internal), and forwards every other name to an
// optional upstream resolver over the query's own transport.
//
// It serves any net.PacketConn and net.Listener, so the same Server runs on
// a host socket and inside the node's userspace netstack. It knows nothing
// of WireGuard or gVisor.
//
// It answers only the sources it is told to (Config.Allow) and only
// well-formed stub queries: see admit.go for the order of the checks.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/agentnet/agentnet/internal/logthrottle"
)

// ErrClosed is returned by Serve and ListenAndServe after Close.
var ErrClosed = errors.New("dns: server closed")

// Record is one agent: a bare name (one lowercase DNS label) and its
// virtual addresses. Either address may be the zero Addr.
type Record struct {
	Name string
	IPv4 netip.Addr
	IPv6 netip.Addr
}

// Config configures a Server.
type Config struct {
	// Domain is optional, default "agents.internal". Agent names are
	// answered as <name>.<Domain> and as the bare <name>.
	Domain string
	// Upstream is optional: "ip:port" of a resolver for names outside
	// Domain, asked over the transport the query came in on. Empty means
	// such queries are REFUSED.
	Upstream string
	// Allow lists the client addresses answered. Optional; default
	// loopback only (127.0.0.0/8 and ::1). A datagram or connection from
	// any other address is dropped unread, counted in Stats.RefusedSource
	// and logged once per source per 10 s. The node passes its overlay
	// prefixes (and loopback for the host listener).
	Allow []netip.Prefix
	// Logger is optional, default slog.Default().
	Logger *slog.Logger
	// Now is optional, default time.Now; it spaces the refusal logs.
	Now func() time.Time
}

// Stats counts queries by how they were answered.
type Stats struct {
	Answer    uint64 // NOERROR with answers from the table
	NoData    uint64 // NOERROR without answers: the name exists, not the type
	NXDomain  uint64 // unknown name inside Domain
	Refused   uint64 // outside Domain without Upstream, or not class IN
	Forwarded uint64 // answered by Upstream
	FormErr   uint64 // malformed or rejected queries
	BadVers   uint64 // EDNS version other than 0 (RFC 6891 §6.1.3)
	ServFail  uint64 // Upstream failed or timed out

	RefusedSource uint64 // datagrams and connections from outside Config.Allow, dropped unread
}

// Server answers DNS queries for agent names. Its methods are safe for
// concurrent use.
//
// Lock order: mu and the limiter's lock are never held together (the
// limiter is asked on the query path, mu only by Serve and Close).
type Server struct {
	domain   string // lowercase FQDN with trailing dot, e.g. "agents.internal."
	upstream string
	allow    []netip.Prefix
	log      *slog.Logger
	now      func() time.Time
	limiter  logthrottle.Limiter // one refusal log line per source per interval

	table atomic.Pointer[table] // replaced whole by SetRecords

	// ctx is cancelled by Close to abort forwarded exchanges.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex // guards the fields below
	closed  bool
	servers []*mdns.Server // started servers, shut down by Close
	wg      sync.WaitGroup // one per server goroutine

	stats struct {
		answer, nodata, nxdomain, refused, forwarded, formerr, badvers, servfail atomic.Uint64
		refusedSource                                                            atomic.Uint64
	}
}

// table is an immutable snapshot of the records.
type table struct {
	byName map[string]Record     // key: bare lowercase name
	byAddr map[netip.Addr]string // virtual IP → bare name
	serial uint32
}

// New returns a Server with an empty table; it serves nothing until Serve
// or ListenAndServe.
func New(cfg Config) *Server {
	domain := strings.ToLower(strings.Trim(cfg.Domain, "."))
	if domain == "" {
		domain = DefaultDomain
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	allow := slices.Clone(cfg.Allow)
	if len(allow) == 0 {
		allow = loopback()
	}
	s := &Server{
		domain:   mdns.Fqdn(domain),
		upstream: cfg.Upstream,
		allow:    allow,
		log:      cfg.Logger,
		now:      cfg.Now,
		limiter:  logthrottle.Limiter{Interval: refusedLogInterval},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.table.Store(&table{byName: map[string]Record{}, byAddr: map[netip.Addr]string{}})
	return s
}

// SetRecords atomically replaces the whole table; the next query sees it.
// Names are lowercased; records whose name is not a single DNS label are
// skipped and logged. Later duplicates replace earlier ones.
func (s *Server) SetRecords(recs []Record) {
	old := s.table.Load()
	t := &table{
		byName: make(map[string]Record, len(recs)),
		byAddr: make(map[netip.Addr]string, 2*len(recs)),
		serial: old.serial + 1,
	}
	for _, r := range recs {
		r.Name = strings.ToLower(r.Name)
		if !validLabel(r.Name) {
			s.log.Warn("dns: skipping record", "node", r.Name, "reason", "name is not a DNS label")
			continue
		}
		r.IPv4 = r.IPv4.Unmap()
		if !r.IPv4.Is4() {
			r.IPv4 = netip.Addr{}
		}
		if !r.IPv6.Is6() || r.IPv6.Is4In6() {
			r.IPv6 = netip.Addr{}
		}
		t.byName[r.Name] = r
		if r.IPv4.IsValid() {
			t.byAddr[r.IPv4] = r.Name
		}
		if r.IPv6.IsValid() {
			t.byAddr[r.IPv6.WithZone("")] = r.Name
		}
	}
	s.table.Store(t)
}

// Lookup finds an agent by bare name or name.domain, case-insensitively,
// with or without a trailing dot.
func (s *Server) Lookup(name string) (Record, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if bare, ok := strings.CutSuffix(name, "."+strings.TrimSuffix(s.domain, ".")); ok {
		name = bare
	}
	if strings.Contains(name, ".") {
		return Record{}, false
	}
	r, ok := s.table.Load().byName[name]
	return r, ok
}

// Stats returns the query counters.
func (s *Server) Stats() Stats {
	return Stats{
		Answer:    s.stats.answer.Load(),
		NoData:    s.stats.nodata.Load(),
		NXDomain:  s.stats.nxdomain.Load(),
		Refused:   s.stats.refused.Load(),
		Forwarded: s.stats.forwarded.Load(),
		FormErr:   s.stats.formerr.Load(),
		BadVers:   s.stats.badvers.Load(),
		ServFail:  s.stats.servfail.Load(),

		RefusedSource: s.stats.refusedSource.Load(),
	}
}

// Serve serves UDP on pc and TCP on l (either may be nil) in goroutines
// owned by s, and returns once both are accepting. It takes ownership of pc
// and l: Close closes them, and so does a failed Serve. It may be called
// more than once to serve more sockets.
func (s *Server) Serve(pc net.PacketConn, l net.Listener) error {
	closeAll := func() {
		if pc != nil {
			pc.Close()
		}
		if l != nil {
			l.Close()
		}
	}
	if pc == nil && l == nil {
		return errors.New("dns: serve: no PacketConn or Listener")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		closeAll()
		return ErrClosed
	}
	var started []*mdns.Server
	fail := func(err error) error {
		for _, srv := range started {
			s.shutdown(srv)
		}
		closeAll()
		return err
	}
	if pc != nil {
		srv := s.newServer()
		srv.PacketConn = pc
		if err := s.start(srv, "udp", pc.LocalAddr()); err != nil {
			return fail(err)
		}
		started = append(started, srv)
	}
	if l != nil {
		srv := s.newServer()
		srv.Listener = l
		if err := s.start(srv, "tcp", l.Addr()); err != nil {
			return fail(err)
		}
		started = append(started, srv)
	}
	s.servers = append(s.servers, started...)
	return nil
}

func (s *Server) newServer() *mdns.Server {
	return &mdns.Server{
		Handler:        mdns.HandlerFunc(s.serveDNS),
		DecorateReader: s.decorateReader,
		MsgAcceptFunc:  s.acceptHeader,
		MsgInvalidFunc: func([]byte, error) { s.stats.formerr.Add(1) },
	}
}

// start runs srv in a goroutine owned by s and waits until it is serving.
// The caller holds s.mu.
func (s *Server) start(srv *mdns.Server, transport string, addr net.Addr) error {
	ready := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(ready) }
	done := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := srv.ActivateAndServe()
		if err != nil {
			s.log.Warn("dns: server stopped", "endpoint", addr, "path", transport, "err", err)
		}
		done <- err
	}()
	select {
	case <-ready:
		return nil
	case err := <-done:
		if err == nil {
			err = errors.New("stopped before serving")
		}
		return fmt.Errorf("dns: serve %s on %s: %w", transport, addr, err)
	}
}

func (s *Server) shutdown(srv *mdns.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	_ = srv.ShutdownContext(ctx) // "not started" when it already died; nothing to do
	if srv.Listener != nil {
		srv.Listener.Close()
	}
	if srv.PacketConn != nil {
		srv.PacketConn.Close()
	}
}

// ListenAndServe opens UDP and TCP on the same host:port (port 0: one
// OS-chosen port for both) and serves them. It returns the bound address.
func (s *Server) ListenAndServe(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("dns: listen %q: %w", addr, err)
	}
	const tries = 10
	for try := 1; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		l, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(bound.Port())))
		if err != nil {
			pc.Close()
			// The OS picked a UDP port whose TCP twin is taken: pick again.
			if port == "0" && errors.Is(err, syscall.EADDRINUSE) && try < tries {
				continue
			}
			return netip.AddrPort{}, fmt.Errorf("dns: listen tcp %s: %w", bound, err)
		}
		if err := s.Serve(pc, l); err != nil {
			return netip.AddrPort{}, err
		}
		return netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()), nil
	}
}

// Close stops every server, aborts forwarded queries, and waits for all
// goroutines of s. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()

	s.cancel()
	for _, srv := range servers {
		s.shutdown(srv)
	}
	s.wg.Wait()
	return nil
}
