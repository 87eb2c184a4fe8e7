package coordinator

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// pipeListener is an in-memory net.Listener of net.Pipe connections, so
// that the coordinator's http.Server and connLimiter run inside a synctest
// bubble on its fake clock. Every connection has the same (unparseable)
// remote address, so all share one source.
type pipeListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// dial returns the client end of a new connection.
func (l *pipeListener) dial() net.Conn {
	c, s := net.Pipe()
	l.ch <- s
	return c
}

// dialContext is dial for an http.Transport: it fails once the listener
// is closed or ctx is done instead of waiting for an Accept.
func (l *pipeListener) dialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case l.ch <- s:
		return c, nil
	case <-l.done:
	case <-ctx.Done():
	}
	c.Close()
	s.Close()
	return nil, net.ErrClosed
}

// connEvents records connLimiter events.
type connEvents struct {
	mu  sync.Mutex
	got []string
}

func (e *connEvents) record(refused bool, reason string, _ netip.Prefix, _ string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	what := "shed "
	if refused {
		what = "refused "
	}
	e.got = append(e.got, what+reason)
}

func (e *connEvents) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...)
}

// testServer runs newHTTPServer behind a connLimiter on a pipeListener,
// as New does on TCP. It must be called inside a synctest bubble.
func testServer(t *testing.T, cert tls.Certificate, lim ConnLimits, h http.Handler) (*pipeListener, *connEvents, *connLimiter) {
	t.Helper()
	lim, err := lim.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	ev := &connEvents{}
	cl := newConnLimiter(ln, lim, ev.record)
	srv := newHTTPServer(h, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}, lim, cl.connState)
	srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(cl, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln, ev, cl
}

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	cert, _, err := loadOrCreateCert(t.TempDir(), sanNames(netip.MustParseAddr("127.0.0.1"), "127.0.0.1"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// closedAfter reads from c until it fails and sends how long that took.
func closedAfter(c net.Conn) <-chan time.Duration {
	ch := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		_, _ = io.Copy(io.Discard, c)
		ch <- time.Since(start)
	}()
	return ch
}

// tlsGet opens a TLS connection over ln, sends one GET and returns the
// connection with the response read (its body included).
func tlsGet(t *testing.T, ln *pipeListener) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	tc := tls.Client(ln.dial(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) // pin not under test
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: c\r\n\r\n"); err != nil {
		t.Fatalf("write request: %v", err)
	}
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return tc, br
}

// A client that never completes the TLS handshake is dropped after
// HandshakeTimeout, and a kept-alive connection after IdleTimeout, on the
// fake clock (before the limits were configurable they were fixed at the
// same defaults; what is new is that the limiter's slots come back when
// the server drops them).
func TestConnTimeouts(t *testing.T) {
	cert := testCert(t)
	synctest.Test(t, func(t *testing.T) {
		lim := ConnLimits{HandshakeTimeout: 3 * time.Second, IdleTimeout: 40 * time.Second}
		ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		ln, _, cl := testServer(t, cert, lim, ok)

		silent := ln.dial()
		if d := <-closedAfter(silent); d < lim.HandshakeTimeout || d > lim.HandshakeTimeout+time.Second {
			t.Errorf("silent connection closed after %v, want %v", d, lim.HandshakeTimeout)
		}
		silent.Close()

		tc, br := tlsGet(t, ln)
		if d := <-closedAfter(struct{ net.Conn }{readerConn{tc, br}}); d < lim.IdleTimeout || d > lim.IdleTimeout+time.Second {
			t.Errorf("idle connection closed after %v, want %v", d, lim.IdleTimeout)
		}
		tc.Close()
		synctest.Wait()
		if open, _ := cl.counts(netip.Prefix{}); open != 0 {
			t.Errorf("%d connections counted open after both were dropped", open)
		}
	})
}

// readerConn reads through a bufio.Reader that may hold buffered bytes.
type readerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Over a cap a new connection displaces the oldest idle connection in the
// cap's scope; when every one is busy (a request in progress, as node
// streams always are) it is refused. Both are reported, by cap.
func TestConnCapsShedIdleRefuseBusy(t *testing.T) {
	cert := testCert(t)
	for _, c := range []struct {
		name   string
		lim    ConnLimits
		reason string
	}{
		{"per source", ConnLimits{PerSource: 2, Total: -1}, connCapSource},
		{"total", ConnLimits{PerSource: -1, Total: 2}, connCapTotal},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				block := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					<-release
					io.WriteString(w, "ok")
				})
				ln, ev, cl := testServer(t, cert, c.lim, block)

				// Two idle connections, then a third: the oldest is shed.
				a, b := ln.dial(), ln.dial()
				aClosed := closedAfter(a)
				synctest.Wait()
				third := ln.dial()
				if d := <-aClosed; d != 0 {
					t.Errorf("oldest idle connection closed after %v, want at once", d)
				}
				b.Close()
				third.Close()
				synctest.Wait()

				// Two busy connections (requests in progress), then a third:
				// refused.
				var wg sync.WaitGroup
				conns := make([]*tls.Conn, 2)
				for i := range conns {
					wg.Go(func() { conns[i], _ = tlsGet(t, ln) })
				}
				synctest.Wait()
				refused := ln.dial()
				if d := <-closedAfter(refused); d != 0 {
					t.Errorf("connection over the cap with every connection busy: closed after %v, want at once", d)
				}
				close(release)
				wg.Wait()
				for _, tc := range conns {
					if tc != nil {
						tc.Close()
					}
				}
				synctest.Wait()
				want := []string{"shed " + c.reason, "refused " + c.reason}
				if got := ev.list(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
					t.Errorf("events %q, want %q", got, want)
				}
				if open, _ := cl.counts(netip.Prefix{}); open != 0 {
					t.Errorf("%d connections counted open after all closed", open)
				}
			})
		})
	}
}

func TestDefaultConnsTotal(t *testing.T) {
	for _, c := range []struct {
		nofile uint64
		want   int
	}{{0, DefaultConnsTotal}, {1 << 20, DefaultConnsTotal}, {4096, 3072}, {1024, 768}, {1, 1}} {
		if got := defaultConnsTotal(c.nofile); got != c.want {
			t.Errorf("defaultConnsTotal(%d) = %d, want %d", c.nofile, got, c.want)
		}
	}
}
