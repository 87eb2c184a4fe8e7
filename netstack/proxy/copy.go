package proxy

import (
	"io"
	"net"
	"sync"
)

// closeWriter is implemented by *net.TCPConn, gVisor's gonet.TCPConn and
// our wrappers.
type closeWriter interface{ CloseWrite() error }

// join copies a→b and b→a until both directions have ended, then closes
// both. When one side reaches EOF the other is half-closed (CloseWrite, or
// Close if it cannot half-close) so the peer sees the end of the stream and
// can still answer. A read or write error in either direction closes both
// connections, which ends the other direction too. join returns only after
// both copies have returned; it owns the one goroutine it starts.
func join(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pipe(b, a)
	}()
	pipe(a, b)
	wg.Wait()
	a.Close()
	b.Close()
}

// pipe copies src to dst. On EOF it half-closes dst; on error it closes
// both.
func pipe(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}

// bufConn is a hijacked connection whose first bytes already sit in a
// reader (net/http's bufio.Reader).
type bufConn struct {
	net.Conn
	r io.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
