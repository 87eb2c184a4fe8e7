package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/agentnet/agentnet/internal/logtest"
)

// holdServer accepts on ln until it closes and hands every connection to
// the test on the returned channel, as an --expose front-end would keep
// it open.
func holdServer(tb testing.TB, ln net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 4096)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	return ch
}

// dialHeld dials dst from p.a and waits until b's server has accepted the
// connection. It returns both ends.
func dialHeld(t *testing.T, p *pair, accepted <-chan net.Conn, dst netip.AddrPort) (client, server net.Conn) {
	t.Helper()
	c, err := p.a.DialContext(testCtx(t), "tcp", dst.String())
	if err != nil {
		t.Fatalf("dial %v: %v", dst, err)
	}
	select {
	case s := <-accepted:
		return c, s
	case <-testCtx(t).Done():
		t.Fatalf("connection to %v was not accepted", dst)
	}
	return nil, nil
}

// dialRefused dials dst from p.a and checks the connection is reset: the
// handshake completes in gVisor, Accept resets it.
func dialRefused(t *testing.T, p *pair, dst netip.AddrPort) {
	t.Helper()
	c, err := p.a.DialContext(testCtx(t), "tcp", dst.String())
	if err != nil {
		if !isReset(err) {
			t.Fatalf("connection over the cap to %v: dial %v, want a reset", dst, err)
		}
		return // reset before Dial returned
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !isReset(err) {
			t.Fatalf("connection over the cap to %v: read %v, want a reset", dst, err)
		}
	case <-testCtx(t).Done():
		t.Fatalf("connection over the cap to %v was neither accepted nor reset", dst)
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "reset")
}

// TestConnCaps: one source opening more than its cap is reset and
// counted, another source still connects, the total stays bounded, and
// closing connections frees their slots.
func TestConnCaps(t *testing.T) {
	const perSource, total = 8, 12
	log, logs := logtest.Logger()
	p := newPairConfig(t, Config{}, Config{MaxConnsPerSource: perSource, MaxConns: total, Logger: log})
	ln, err := p.b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := holdServer(t, ln)
	to4 := netip.AddrPortFrom(addrB4, 7000) // from a's IPv4: one source
	to6 := netip.AddrPortFrom(addrB6, 7000) // from a's IPv6: another

	var servers4 []net.Conn
	for range perSource {
		c, s := dialHeld(t, p, accepted, to4)
		defer c.Close()
		servers4 = append(servers4, s)
	}
	for range 3 {
		dialRefused(t, p, to4)
	}
	if st := p.b.Stats(); st.ConnsRefusedPerSource != 3 || st.ConnsRefusedTotal != 0 || st.ConnsOpen != perSource {
		t.Fatalf("after flooding from one source: %+v", st)
	}
	if n := strings.Count(logs.String(), "reason=per_source"); n != 1 {
		t.Fatalf("3 refusals of one source logged %d times, want once:\n%s", n, logs)
	}

	// Another source gets the rest, up to the total cap.
	for range total - perSource {
		c, s := dialHeld(t, p, accepted, to6)
		defer c.Close()
		defer s.Close()
	}
	dialRefused(t, p, to6)
	if st := p.b.Stats(); st.ConnsRefusedTotal != 1 || st.ConnsOpen != total {
		t.Fatalf("at the total cap: %+v", st)
	}

	// Closing frees slots: the flooding source may connect again.
	servers4[0].Close()
	servers4[0].Close() // a second Close frees nothing more
	servers4[1].Close()
	if st := p.b.Stats(); st.ConnsOpen != total-2 {
		t.Fatalf("after closing 2: %+v", st)
	}
	for _, s := range servers4[2:] {
		defer s.Close()
	}
	for range 2 {
		c, s := dialHeld(t, p, accepted, to4)
		defer c.Close()
		defer s.Close()
	}
	dialRefused(t, p, to4)
	if st := p.b.Stats(); st.ConnsOpen != total || st.ConnsRefusedPerSource+st.ConnsRefusedTotal != 5 {
		t.Fatalf("after reconnecting: %+v", st)
	}
}

// BenchmarkConnFlood measures what one peer opening 2,000 connections to
// a listener that keeps them costs, with the default caps and without
// caps: Go heap in use and process RSS growth, both stacks together (both
// ends live in this process). Run with -benchtime 1x.
func BenchmarkConnFlood(b *testing.B) {
	const conns = 2000
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"default-caps", Config{}},
		{"uncapped", Config{MaxConnsPerSource: 1 << 20, MaxConns: 1 << 20}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				heap0, rss0 := memNow()
				p := newPairConfig(b, Config{}, bc.cfg)
				ln, err := p.b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 7000))
				if err != nil {
					b.Fatal(err)
				}
				// Each accepted conn gets a reader with a 32 KiB buffer,
				// as an io.Copy in a front-end would.
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						go io.CopyBuffer(io.Discard, c, make([]byte, 32<<10))
					}
				}()
				var open []net.Conn
				for range conns {
					c, err := p.a.DialContext(b.Context(), "tcp", netip.AddrPortFrom(addrB4, 7000).String())
					if err != nil {
						continue
					}
					open = append(open, c)
				}
				// Wait until the server has taken every handshake off the
				// accept queue, accepted or reset.
				for {
					st := p.b.Stats()
					if st.ConnsOpen+st.ConnsRefusedPerSource+st.ConnsRefusedTotal >= uint64(len(open)) {
						break
					}
					runtime.Gosched()
				}
				heap1, rss1 := memNow()
				st := p.b.Stats()
				b.ReportMetric(float64(st.ConnsOpen), "open")
				b.ReportMetric(float64(st.ConnsRefusedPerSource+st.ConnsRefusedTotal), "refused")
				b.ReportMetric(float64(heap1-heap0)/(1<<20), "heap-MiB")
				b.ReportMetric(float64(rss1-rss0)/(1<<20), "rss-MiB")
				b.Logf("%s: %d connections attempted, %d open, %d refused; heap in use %.1f → %.1f MiB, RSS %.1f → %.1f MiB",
					bc.name, conns, st.ConnsOpen, st.ConnsRefusedPerSource+st.ConnsRefusedTotal,
					float64(heap0)/(1<<20), float64(heap1)/(1<<20), float64(rss0)/(1<<20), float64(rss1)/(1<<20))
				for _, c := range open {
					c.Close()
				}
				ln.Close()
				p.close()
			}
		})
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

// TestAcceptedConnSetLinger: the proxy front-ends reset a connection over
// their own caps with SetLinger(0) and Close, as on a *net.TCPConn.
func TestAcceptedConnSetLinger(t *testing.T) {
	p := newPair(t, 0)
	ln, err := p.b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 7001))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, s := dialHeld(t, p, holdServer(t, ln), netip.AddrPortFrom(addrB4, 7001))
	defer c.Close()
	l, ok := s.(interface{ SetLinger(sec int) error })
	if !ok {
		t.Fatalf("%T has no SetLinger", s)
	}
	if err := l.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil || !isReset(err) {
		t.Fatalf("read after the server's linger-0 close: %v, want a reset", err)
	}
	if st := p.b.Stats(); st.ConnsOpen != 0 {
		t.Fatalf("slot not freed: %+v", st)
	}
}

// TestListenBacklogBoundsInFlight: connections nobody has accepted yet are
// bounded by Config.ListenBacklog, whatever a peer sends: once the accept
// queue is full further handshakes are dropped (the peer retransmits).
func TestListenBacklogBoundsInFlight(t *testing.T) {
	const backlog, dials = 4, 24
	p := newPairConfig(t, Config{}, Config{ListenBacklog: backlog})
	ln, err := p.b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 7002))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // nobody accepts
	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range dials {
		wg.Go(func() {
			if c, err := p.a.DialContext(ctx, "tcp", netip.AddrPortFrom(addrB4, 7002).String()); err == nil {
				<-ctx.Done()
				c.Close()
			}
		})
	}
	tcp := p.b.stack.Stats().TCP
	for tcp.ListenOverflowSynDrop.Value()+tcp.ListenOverflowAckDrop.Value() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the accept queue never overflowed")
		}
		runtime.Gosched()
	}
	// gVisor's accept queue holds backlog+1 (Linux parity).
	if n := tcp.CurrentEstablished.Value(); n > backlog+1 {
		t.Fatalf("%d connections established and not accepted with backlog %d", n, backlog)
	}
	t.Logf("%d dials: %d established (not accepted), %d SYNs and %d ACKs dropped, %d SYN cookies",
		dials, tcp.CurrentEstablished.Value(), tcp.ListenOverflowSynDrop.Value(), tcp.ListenOverflowAckDrop.Value(), tcp.ListenOverflowSynCookieSent.Value())
}
