package netstack

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The gonet adapters report a closed endpoint with gVisor's own error
// strings. These thin wrappers translate errors seen after Close (of the
// listener or of the whole Stack) to net.ErrClosed, so callers can use
// errors.Is(err, net.ErrClosed) as with the standard library. They cost
// one allocation per conn, none per packet.

// tcpListener is a net.Listener on a Stack. It is gonet's TCPListener
// plus the connection caps: gonet hides the accepted endpoint, and
// resetting a refused connection needs it.
type tcpListener struct {
	s  *Stack
	ep tcpip.Endpoint // listening
	wq *waiter.Queue  // ep's

	closeOnce sync.Once
	cancel    chan struct{} // closed by Close: wakes a blocked Accept
}

func newTCPListener(s *Stack, ep tcpip.Endpoint, wq *waiter.Queue) *tcpListener {
	return &tcpListener{s: s, ep: ep, wq: wq, cancel: make(chan struct{})}
}

// Accept implements net.Listener. It resets (RST) and counts, without
// blocking, each connection over a cap (Config.MaxConnsPerSource,
// MaxConns), and returns the next one within them. The returned conn
// holds its slot until Close.
func (l *tcpListener) Accept() (net.Conn, error) {
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		var peer tcpip.FullAddress
		ep, wq, terr := l.ep.Accept(&peer)
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-l.cancel:
				return nil, l.closedError()
			case <-l.s.done:
				return nil, l.closedError()
			case <-ready:
			}
			continue
		}
		if terr != nil {
			if l.isClosed() || l.s.closed() {
				return nil, l.closedError()
			}
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: errors.New(terr.String())}
		}
		src, _ := netip.AddrFromSlice(peer.Addr.AsSlice())
		src = src.Unmap()
		if _, ok := l.s.conns.Acquire(src); !ok {
			// Linger 0: Close sends RST and frees the endpoint at once
			// (no FIN exchange, no TIME_WAIT).
			ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true})
			ep.Close()
			continue
		}
		return &acceptedConn{tcpConn: tcpConn{TCPConn: gonet.NewTCPConn(wq, ep), s: l.s}, ep: ep, src: src}, nil
	}
}

func (l *tcpListener) isClosed() bool {
	select {
	case <-l.cancel:
		return true
	default:
		return false
	}
}

func (l *tcpListener) closedError() error {
	return &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
}

// Close implements net.Listener: a blocked Accept returns net.ErrClosed.
// Connections not yet accepted are dropped; accepted ones stay open.
func (l *tcpListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.cancel)
		l.ep.Close()
	})
	return nil
}

// Addr implements net.Listener.
func (l *tcpListener) Addr() net.Addr {
	a, err := l.ep.GetLocalAddress()
	if err != nil {
		return nil
	}
	return &net.TCPAddr{IP: a.Addr.AsSlice(), Port: int(a.Port)}
}

// acceptedConn is a conn from tcpListener.Accept: it gives its slot back
// on Close.
type acceptedConn struct {
	tcpConn
	ep   tcpip.Endpoint
	src  netip.Addr
	once sync.Once
}

// Close implements net.Conn and releases the connection's slot.
func (c *acceptedConn) Close() error {
	c.once.Do(func() { c.s.conns.Release(c.src) })
	return c.TCPConn.Close()
}

// SetLinger is net.TCPConn's SetLinger: with sec 0, Close resets the
// connection (RST) instead of closing it gracefully; negative restores
// the default.
func (c *acceptedConn) SetLinger(sec int) error {
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: sec >= 0, Timeout: time.Duration(sec) * time.Second})
	return nil
}

// tcpConn is a net.Conn on a Stack.
type tcpConn struct {
	*gonet.TCPConn
	s *Stack
}

func (c *tcpConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if err != nil && c.s.closed() {
		err = &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: net.ErrClosed}
	}
	return n, err
}

func (c *tcpConn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	if err != nil && c.s.closed() {
		err = &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: net.ErrClosed}
	}
	return n, err
}

// udpConn is a net.Conn (when dialed) and net.PacketConn on a Stack.
type udpConn struct {
	*gonet.UDPConn
	s *Stack
}

func (c *udpConn) Read(b []byte) (int, error) {
	n, err := c.UDPConn.Read(b)
	if err != nil && c.s.closed() {
		err = &net.OpError{Op: "read", Net: "udp", Source: c.LocalAddr(), Err: net.ErrClosed}
	}
	return n, err
}

func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.UDPConn.ReadFrom(b)
	if err != nil && c.s.closed() {
		err = &net.OpError{Op: "read", Net: "udp", Source: c.LocalAddr(), Err: net.ErrClosed}
	}
	return n, a, err
}
