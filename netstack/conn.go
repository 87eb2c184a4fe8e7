package netstack

import (
	"net"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// The gonet adapters report a closed endpoint with gVisor's own error
// strings. These thin wrappers translate errors seen after Close (of the
// listener or of the whole Stack) to net.ErrClosed, so callers can use
// errors.Is(err, net.ErrClosed) as with the standard library. They cost
// one allocation per conn, none per packet.

// tcpListener is a net.Listener on a Stack.
type tcpListener struct {
	*gonet.TCPListener
	s      *Stack
	closed atomic.Bool
}

// Accept implements net.Listener.
func (l *tcpListener) Accept() (net.Conn, error) {
	c, err := l.TCPListener.Accept()
	if err != nil {
		if l.closed.Load() || l.s.closed() {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
		}
		return nil, err
	}
	return &tcpConn{TCPConn: c.(*gonet.TCPConn), s: l.s}, nil
}

// Close implements net.Listener: a blocked Accept returns net.ErrClosed.
func (l *tcpListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	// Shutdown wakes a blocked Accept (it closes gonet's cancel channel);
	// Close releases the endpoint.
	l.TCPListener.Shutdown()
	return l.TCPListener.Close()
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
