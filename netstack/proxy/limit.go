package proxy

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/agentnet/agentnet/internal/connlimit"
)

// ConnStats are a front-end's counters of client connections.
type ConnStats struct {
	Open             int    // accepted and not yet closed
	RefusedPerSource uint64 // reset: the source had MaxConnsPerSource open
	RefusedTotal     uint64 // reset: MaxConns were open
}

func connStats(l *connlimit.Limiter) ConnStats {
	s := l.Stats()
	return ConnStats{Open: s.Open, RefusedPerSource: s.RefusedPerSource, RefusedTotal: s.RefusedTotal}
}

// limitListener caps the connections a front-end holds, per source
// address and in total (issue 17 item 5: one peer's 10,000 connections to
// an --expose port cost the node 1.06 GB). Accept resets each connection
// over a cap (RST) and counts it, then accepts the next: it never waits
// for a slot, so the listener's queue keeps draining under a flood. An
// accepted connection holds its slot until its first Close.
type limitListener struct {
	net.Listener
	lim *connlimit.Limiter
}

// newLimiter checks a config's caps (before anything listens); log gets
// one line per (source, cap) per interval.
func newLimiter(perSource, total int, log *slog.Logger) (*connlimit.Limiter, error) {
	return connlimit.New(connlimit.Config{PerSource: perSource, Total: total, Logger: log})
}

// Accept implements net.Listener.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := remoteIP(c)
		if _, ok := l.lim.Acquire(src); ok {
			return &limitedConn{Conn: c, lim: l.lim, src: src}, nil
		}
		reset(c)
	}
}

// reset closes c with RST where it can (linger 0: *net.TCPConn and
// netstack's connections), else plainly.
func reset(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(sec int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// remoteIP is c's source address; connections without one share the
// zero Addr's slots.
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	if c.RemoteAddr() == nil {
		return netip.Addr{}
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// limitedConn gives its slot back on its first Close.
type limitedConn struct {
	net.Conn
	lim  *connlimit.Limiter
	src  netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.lim.Release(c.src) })
	return c.Conn.Close()
}

// CloseWrite half-closes when the connection can (see join).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
