package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// capFrontEnd starts one front-end with caps and says how a client makes
// a connection through it carry data (so it surely holds a slot).
type capFrontEnd struct {
	name  string
	start func(t *testing.T, f *fakeOverlay, echo string, perSource, total int) (addr string, stats func() ConnStats)
	use   func(t *testing.T, c net.Conn, echo string)
}

var capFrontEnds = []capFrontEnd{
	{
		name: "socks5",
		start: func(t *testing.T, f *fakeOverlay, echo string, perSource, total int) (string, func() ConnStats) {
			s := newTestSOCKS5(t, SOCKS5Config{Overlay: f, MaxConnsPerSource: perSource, MaxConns: total})
			return s.Addr().String(), s.ConnStats
		},
		use: func(t *testing.T, c net.Conn, echo string) {
			t.Helper()
			req := []byte{5, 1, 0, 5, cmdConnect, 0, atypDomain, 6}
			req = append(req, "search"...)
			req = binary.BigEndian.AppendUint16(req, portOf(echo))
			c.Write(req)
			var rep [2 + 10]byte // method reply, then a reply with an IPv4 BND
			if _, err := io.ReadFull(c, rep[:]); err != nil || rep[3] != repSucceeded {
				t.Fatalf("socks5: reply % x, %v", rep, err)
			}
			checkEcho(t, c, "x")
		},
	},
	{
		name: "http",
		start: func(t *testing.T, f *fakeOverlay, echo string, perSource, total int) (string, func() ConnStats) {
			h := newTestHTTPProxy(t, HTTPProxyConfig{Overlay: f, MaxConnsPerSource: perSource, MaxConns: total})
			return h.Addr().String(), h.ConnStats
		},
		use: func(t *testing.T, c net.Conn, echo string) {
			t.Helper()
			dest := "search:" + strconv.Itoa(int(portOf(echo)))
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", dest, dest)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("http: CONNECT: %v %v", resp, err)
			}
			c.Write([]byte("x"))
			if b, err := br.ReadByte(); err != nil || b != 'x' {
				t.Fatalf("http: echo %q %v", b, err)
			}
		},
	},
	{
		name: "forward",
		start: func(t *testing.T, f *fakeOverlay, echo string, perSource, total int) (string, func() ConnStats) {
			fw, err := NewForward(ForwardConfig{Listen: "127.0.0.1:0", Target: "search:" + strconv.Itoa(int(portOf(echo))), Overlay: f, MaxConnsPerSource: perSource, MaxConns: total})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { fw.Close() })
			return fw.Addr().String(), fw.ConnStats
		},
		use: func(t *testing.T, c net.Conn, _ string) { t.Helper(); checkEcho(t, c, "x") },
	},
	{
		name: "expose",
		start: func(t *testing.T, f *fakeOverlay, echo string, perSource, total int) (string, func() ConnStats) {
			e, err := NewExpose(ExposeConfig{Port: 8080, Target: echo, Overlay: f, MaxConnsPerSource: perSource, MaxConns: total})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			return f.overlayListener(8080), e.ConnStats // the peers' side of the overlay port
		},
		use: func(t *testing.T, c net.Conn, _ string) { t.Helper(); checkEcho(t, c, "x") },
	},
}

func portOf(hostport string) uint16 {
	_, p, _ := splitPort(hostport)
	return p
}

// dialFrom connects to addr from the loopback address src (127.0.0.1 and
// 127.0.0.2 are two sources).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second)) // a bound for a failing test, not synchronisation
	return c
}

// expectReset connects to addr from src and checks that the front-end
// resets the connection without reading from it. On loopback the reset
// may come before Dial has returned, which then fails with it.
func expectReset(t *testing.T, src, addr string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second)) // a bound for a failing test, not synchronisation
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection over the cap from %s: %v; want a reset", src, err)
	}
}

// TestFrontEndConnCaps: in every front-end, one source opening more than
// its cap is reset and counted, another source still connects, the total
// stays bounded, and closing a connection frees its slot.
func TestFrontEndConnCaps(t *testing.T) {
	const perSource, total = 3, 5
	for _, fe := range capFrontEnds {
		t.Run(fe.name, func(t *testing.T) {
			f := newFakeOverlay()
			echo := tcpEcho(t)
			f.addTCP("search", echo)
			addr, stats := fe.start(t, f, echo, perSource, total)

			var first []net.Conn
			for range perSource {
				c := dialFrom(t, "127.0.0.1", addr)
				fe.use(t, c, echo)
				first = append(first, c)
			}
			expectReset(t, "127.0.0.1", addr)
			if st := stats(); st != (ConnStats{Open: perSource, RefusedPerSource: 1}) {
				t.Fatalf("after one source's flood: %+v", st)
			}

			for range total - perSource {
				fe.use(t, dialFrom(t, "127.0.0.2", addr), echo)
			}
			expectReset(t, "127.0.0.2", addr)
			if st := stats(); st != (ConnStats{Open: total, RefusedPerSource: 1, RefusedTotal: 1}) {
				t.Fatalf("at the total cap: %+v", st)
			}

			// The front-end frees the slot once it has torn the
			// connection down, after the client's close.
			first[0].Close()
			deadline := time.Now().Add(10 * time.Second)
			for stats().Open != total-1 {
				if time.Now().After(deadline) {
					t.Fatalf("slot not freed after close: %+v", stats())
				}
				runtime.Gosched()
			}
			fe.use(t, dialFrom(t, "127.0.0.1", addr), echo)
		})
	}
}

func TestFrontEndBadCaps(t *testing.T) {
	f := newFakeOverlay()
	for _, err := range []error{
		func() error {
			_, err := NewSOCKS5(SOCKS5Config{Listen: "127.0.0.1:0", Overlay: f, MaxConns: -1})
			return err
		}(),
		func() error {
			_, err := NewHTTPProxy(HTTPProxyConfig{Listen: "127.0.0.1:0", Overlay: f, MaxConnsPerSource: -2})
			return err
		}(),
		func() error {
			_, err := NewForward(ForwardConfig{Listen: "127.0.0.1:0", Target: "search:80", Overlay: f, MaxConns: -3})
			return err
		}(),
		func() error {
			_, err := NewExpose(ExposeConfig{Port: 80, Target: "127.0.0.1:80", Overlay: f, MaxConnsPerSource: -4})
			return err
		}(),
	} {
		if err == nil {
			t.Error("a negative cap was accepted")
		}
	}
	if len(f.listens) != 0 {
		t.Errorf("listened despite a bad cap: %v", f.listens)
	}
}
