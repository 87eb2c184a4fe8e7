package controlclient

import (
	"context"
	"net"
	"sync"
)

// connSet remembers every connection a Client's transports dialed, so that
// Close can end them all. http.Transport.CloseIdleConnections alone leaves
// an HTTP/2 connection open while a stream on it is still being torn down
// (the netmap stream cancelled by the node's Close): such connections then
// outlived the node by the 90 s idle timeout, and a node restarted in a
// loop filled the coordinator's per-source connection cap (64) after ~37
// cycles (TestUpDownCycles).
type connSet struct {
	dialer net.Dialer
	mu     sync.Mutex // guards conns and closed
	conns  map[*trackedConn]struct{}
	closed bool
}

func newConnSet() *connSet {
	return &connSet{conns: map[*trackedConn]struct{}{}}
}

// dial is the transports' DialContext.
func (s *connSet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := s.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, set: s}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns[tc] = struct{}{}
	s.mu.Unlock()
	return tc, nil
}

// closeAll closes every open connection; later dials fail with
// net.ErrClosed.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[*trackedConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// trackedConn leaves its set when closed.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.set.mu.Lock()
		delete(c.set.conns, c)
		c.set.mu.Unlock()
	})
	return c.Conn.Close()
}
