package coordinator

import (
	"container/list"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Connection limits. 20,000 idle TLS connections used to exhaust the
// coordinator's file descriptors: admin requests then timed out with
// nothing logged (issue 17, item 12). The listener is wrapped
// (connLimiter) so that a source (an IPv4 address or IPv6 /64, as for the
// rate limits) holds at most PerSource connections and the coordinator at
// most Total, and the http.Server bounds the TLS handshake, each request
// header and the idle time between requests.
//
// A new connection over a cap does not simply lose: the oldest idle
// connection in the cap's scope (that source's for PerSource, any for
// Total) is closed to make room ("shed"). Idle means no request in
// progress: accepted and not yet sending one (in the TLS handshake, or
// done with it and silent), or kept alive between requests; node streams
// are requests in progress, so they are never shed. Idle connections are
// what a flood is made of, so a fresh admin request or node stream gets in
// while the flood churns, and a well-behaved client that loses an idle
// connection just dials again. Only when every connection in scope is busy
// is the new one refused (closed at once). Both are counted (Stats,
// metrics) and logged once per (source, cap, result) per 10 s.

// ConnLimits configures the connection caps and timeouts. Zero fields take
// their defaults.
type ConnLimits struct {
	// PerSource is optional: open connections per source address (IPv4,
	// or IPv6 /64). Default DefaultConnsPerSource; negative: no cap.
	// Loopback is not exempt (see RateLimits).
	PerSource int
	// Total is optional: open connections in all. Default
	// DefaultConnsTotal, or 3/4 of the process's open-file limit if that
	// is lower; negative: no cap. Keep it below that limit, with room for
	// the store, audit log and metrics listener.
	Total int
	// HandshakeTimeout is optional: how long a client may take for the TLS
	// handshake, and then for each request's header
	// (http.Server.ReadHeaderTimeout, which net/http also applies to the
	// handshake). Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// IdleTimeout is optional: how long a connection may sit with no
	// request between requests (http.Server.IdleTimeout; HTTP/2: with no
	// stream open). Default DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// Defaults of ConnLimits.
const (
	DefaultConnsPerSource   = 64
	DefaultConnsTotal       = 4096
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 2 * time.Minute
)

// Reasons a connection was shed or refused (labels of the metrics).
const (
	connCapSource = "per_source"
	connCapTotal  = "total"
)

// withDefaults fills l's zero fields and checks it.
func (l ConnLimits) withDefaults() (ConnLimits, error) {
	if l.PerSource == 0 {
		l.PerSource = DefaultConnsPerSource
	}
	if l.Total == 0 {
		l.Total = defaultConnsTotal(fileLimit())
	}
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.HandshakeTimeout < 0 || l.IdleTimeout < 0 {
		return l, fmt.Errorf("coordinator: ConnLimits timeouts %v/%v must be positive", l.HandshakeTimeout, l.IdleTimeout)
	}
	return l, nil
}

// defaultConnsTotal is DefaultConnsTotal, or three quarters of the file
// limit nofile (0: unknown) if that is lower: the connections must not be
// what exhausts it (the store, audit log, metrics and stream writes need
// descriptors too).
func defaultConnsTotal(nofile uint64) int {
	if nofile == 0 || nofile*3/4 >= DefaultConnsTotal {
		return DefaultConnsTotal
	}
	return max(int(nofile*3/4), 1)
}

// newHTTPServer is the coordinator's http.Server: handler behind TLS with
// the timeouts of lim. connState must be installed for connLimiter to know
// which connections are idle.
func newHTTPServer(handler http.Handler, tlsCfg *tls.Config, lim ConnLimits, connState func(net.Conn, http.ConnState)) *http.Server {
	return &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: lim.HandshakeTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnState:         connState,
	}
}

// connEvent reports a shed or refused connection: reason is connCapSource
// or connCapTotal, src the source of the new connection.
type connEvent func(refused bool, reason string, src netip.Prefix, remote string)

// connLimiter is a net.Listener that enforces ConnLimits' caps (see the
// file comment). Its Accept only returns admitted connections (refused
// ones are closed in it) and the listener's own errors. It is safe for
// concurrent use; Close closes the listener, not the admitted connections
// (http.Server closes those).
type connLimiter struct {
	net.Listener
	perSource, total int // <= 0: no cap
	onEvent          connEvent

	mu    sync.Mutex // guards the fields below and every trackedConn's elements and released
	open  int
	bySrc map[netip.Prefix]*srcConns
	idle  list.List // of *trackedConn, oldest idle first
}

// srcConns is one source's connections.
type srcConns struct {
	open int
	idle list.List // of *trackedConn, oldest idle first
}

// trackedConn is an admitted connection. Close releases its slot once.
type trackedConn struct {
	net.Conn
	l   *connLimiter
	src netip.Prefix

	// Guarded by l.mu: its elements in l.idle and its source's idle list
	// (nil while busy), and whether its slot was given back.
	idleElem, srcElem *list.Element
	released          bool
}

func newConnLimiter(ln net.Listener, lim ConnLimits, onEvent connEvent) *connLimiter {
	return &connLimiter{Listener: ln, perSource: lim.PerSource, total: lim.Total, onEvent: onEvent, bySrc: map[netip.Prefix]*srcConns{}}
}

// Accept waits for a connection it admits (see the file comment).
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourcePrefix(c.RemoteAddr().String())
		tc, shed, reason := l.admit(c, src)
		for _, s := range shed {
			s.Conn.Close() // the server's goroutine for it ends on the error
		}
		if tc == nil {
			c.Close()
			l.onEvent(true, reason, src, c.RemoteAddr().String())
			continue
		}
		if len(shed) > 0 {
			l.onEvent(false, reason, src, c.RemoteAddr().String())
		}
		return tc, nil
	}
}

// admit takes a slot for a connection from src, freeing idle ones over a
// cap. It returns nil and the cap's reason if every connection in scope
// is busy; else the admitted connection and the ones it displaced (to be
// closed outside the lock).
func (l *connLimiter) admit(c net.Conn, src netip.Prefix) (*trackedConn, []*trackedConn, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var shed []*trackedConn
	reason := ""
	sc := l.bySrc[src]
	if l.perSource > 0 && sc != nil && sc.open >= l.perSource {
		e := sc.idle.Front()
		if e == nil {
			return nil, nil, connCapSource
		}
		victim := e.Value.(*trackedConn)
		l.releaseLocked(victim)
		shed, reason = append(shed, victim), connCapSource
	}
	if l.total > 0 && l.open >= l.total {
		e := l.idle.Front()
		if e == nil {
			// Give back nothing taken above: the victim is already
			// released and will be closed; its slot stays free.
			return nil, shed, connCapTotal
		}
		victim := e.Value.(*trackedConn)
		l.releaseLocked(victim)
		shed, reason = append(shed, victim), connCapTotal
	}
	if sc = l.bySrc[src]; sc == nil {
		sc = &srcConns{}
		l.bySrc[src] = sc
	}
	tc := &trackedConn{Conn: c, l: l, src: src}
	l.open++
	sc.open++
	l.idleLocked(tc) // new: no request yet
	return tc, shed, reason
}

// idleLocked puts tc at the back of the idle lists.
func (l *connLimiter) idleLocked(tc *trackedConn) {
	if tc.released || tc.idleElem != nil {
		return
	}
	tc.idleElem = l.idle.PushBack(tc)
	tc.srcElem = l.bySrc[tc.src].idle.PushBack(tc)
}

// busyLocked takes tc off the idle lists.
func (l *connLimiter) busyLocked(tc *trackedConn) {
	if tc.idleElem == nil {
		return
	}
	l.idle.Remove(tc.idleElem)
	l.bySrc[tc.src].idle.Remove(tc.srcElem)
	tc.idleElem, tc.srcElem = nil, nil
}

// releaseLocked gives tc's slot back (once).
func (l *connLimiter) releaseLocked(tc *trackedConn) {
	if tc.released {
		return
	}
	l.busyLocked(tc)
	tc.released = true
	l.open--
	sc := l.bySrc[tc.src]
	if sc.open--; sc.open == 0 {
		delete(l.bySrc, tc.src)
	}
}

// connState is the http.Server's ConnState hook: it keeps the idle lists.
// HTTP/2 connections report StateActive while a stream is open and
// StateIdle when none is.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	tc, ok := c.(*trackedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateActive:
		l.busyLocked(tc)
	case http.StateIdle:
		l.idleLocked(tc)
	case http.StateHijacked, http.StateClosed:
		l.releaseLocked(tc)
	}
}

// Close closes the connection and gives its slot back.
func (tc *trackedConn) Close() error {
	tc.l.mu.Lock()
	tc.l.releaseLocked(tc)
	tc.l.mu.Unlock()
	return tc.Conn.Close()
}

// counts returns the open connections in all and from src.
func (l *connLimiter) counts(src netip.Prefix) (total, fromSrc int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sc := l.bySrc[src]; sc != nil {
		fromSrc = sc.open
	}
	return l.open, fromSrc
}

// connCapped counts and logs a connection shed or refused over a cap.
func (c *Coordinator) connCapped(refused bool, reason string, src netip.Prefix, remote string) {
	s := &c.stats
	result := "shed oldest idle connection"
	switch {
	case refused && reason == connCapSource:
		s.connRefusedSource.Add(1)
	case refused:
		s.connRefusedTotal.Add(1)
	case reason == connCapSource:
		s.connShedSource.Add(1)
	default:
		s.connShedTotal.Add(1)
	}
	if refused {
		result = "refused: every connection busy"
	}
	if !c.limiter.Allow("conn|"+reason+"|"+result+"|"+src.String(), c.now()) {
		s.logsSuppressed.Add(1)
		return
	}
	total, fromSrc := c.conns.counts(src)
	c.log.Warn("coordinator: connection cap reached", "reason", reason, "endpoint", remote, "result", result,
		"open", total, "open_from_source", fromSrc, "per_source_cap", c.cfg.ConnLimits.PerSource, "total_cap", c.cfg.ConnLimits.Total)
}

// openConns is the number of connections open now.
func (c *Coordinator) openConns() int {
	if c.conns == nil {
		return 0
	}
	total, _ := c.conns.counts(netip.Prefix{})
	return total
}
