package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
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
	if l, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		t.Skipf("127.0.0.2 is not a local address here (only 127.0.0.1 on macOS by default): %v", err)
	} else {
		l.Close()
	}
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

// BenchmarkExposeFlood measures what one source opening 2,000 connections
// to an --expose port costs the front-end (its relay goroutines, buffers
// and dials to the local service), with the default caps and without:
// Go heap in use and process RSS, client, front-end and local service
// together (all in this process). Run with -benchtime 1x.
func BenchmarkExposeFlood(b *testing.B) {
	const conns = 2000
	for _, bc := range []struct {
		name             string
		perSource, total int
	}{
		{"default-caps", 0, 0},
		{"uncapped", 1 << 20, 1 << 20},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				heap0, rss0 := memNow()
				echo, stopEcho := benchEcho(b)
				f := newFakeOverlay()
				e, err := NewExpose(ExposeConfig{Port: 8080, Target: echo, Overlay: f, MaxConnsPerSource: bc.perSource, MaxConns: bc.total})
				if err != nil {
					b.Fatal(err)
				}
				addr := f.overlayListener(8080)
				var open []net.Conn
				working := 0
				for range conns {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						continue // reset before Dial returned
					}
					open = append(open, c)
				}
				// A round trip on each: the relays that were admitted are
				// all carrying data; the others are reset.
				buf := make([]byte, 1)
				for _, c := range open {
					if _, err := c.Write([]byte("x")); err != nil {
						continue
					}
					if _, err := io.ReadFull(c, buf); err == nil {
						working++
					}
				}
				heap1, rss1 := memNow()
				st := e.ConnStats()
				b.ReportMetric(float64(working), "working")
				b.ReportMetric(float64(st.RefusedPerSource+st.RefusedTotal), "refused")
				b.ReportMetric(float64(heap1-heap0)/(1<<20), "heap-MiB")
				b.ReportMetric(float64(rss1-rss0)/(1<<20), "rss-MiB")
				b.Logf("%s: %d connections attempted, %d relayed, %d refused; heap in use %.1f → %.1f MiB, RSS %.1f → %.1f MiB",
					bc.name, conns, working, st.RefusedPerSource+st.RefusedTotal,
					float64(heap0)/(1<<20), float64(heap1)/(1<<20), float64(rss0)/(1<<20), float64(rss1)/(1<<20))
				for _, c := range open {
					c.Close()
				}
				e.Close()
				stopEcho()
			}
		})
	}
}

// benchEcho is tcpEcho for benchmarks: it returns its address and a stop
// function that closes everything and waits.
func benchEcho(b *testing.B) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	})
	return ln.Addr().String(), func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// memNow returns the Go heap in use after a GC and the process RSS (0
// where /proc is missing).
func memNow() (heap, rss int64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = int64(ms.HeapInuse)
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				rss = kb << 10
			}
		}
	}
	return heap, rss
}
