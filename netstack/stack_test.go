package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echoServer accepts on ln and echoes every conn until ln closes.
func echoServer(t testing.TB, ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

func testTCPEcho(t *testing.T, srv netip.Addr) {
	p := newPair(t, 0)
	ln, err := p.b.ListenTCP(netip.AddrPortFrom(netip.Addr{}, 8080))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	echoServer(t, ln)

	c, err := p.a.DialContext(testCtx(t), "tcp", netip.AddrPortFrom(srv, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("hello, agent")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func TestTCPEchoIPv4(t *testing.T) { testTCPEcho(t, addrB4) }
func TestTCPEchoIPv6(t *testing.T) { testTCPEcho(t, addrB6) }

// transfer sends size random bytes from a to b over TCP and checks SHA-256.
func transfer(tb testing.TB, from, to *Stack, dst netip.Addr, size int) {
	tb.Helper()
	ln, err := to.ListenTCP(netip.AddrPortFrom(dst, 9000))
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		res <- r
	}()

	c, err := from.DialContext(testCtx(tb), "tcp", netip.AddrPortFrom(dst, 9000).String())
	if err != nil {
		tb.Fatal(err)
	}
	h := sha256.New()
	chunk := make([]byte, 256<<10)
	rand.Read(chunk)
	for sent := 0; sent < size; sent += len(chunk) {
		chunk[0]++ // vary the stream
		b := chunk[:min(len(chunk), size-sent)]
		h.Write(b)
		if _, err := c.Write(b); err != nil {
			tb.Fatal(err)
		}
	}
	c.Close()
	select {
	case r := <-res:
		if r.err != nil {
			tb.Fatal(r.err)
		}
		if r.n != int64(size) {
			tb.Fatalf("received %d bytes, want %d", r.n, size)
		}
		if !bytes.Equal(r.sum[:], h.Sum(nil)) {
			tb.Fatal("SHA-256 mismatch")
		}
	case <-time.After(60 * time.Second):
		tb.Fatal("transfer timed out")
	}
}

func TestBulkTransfer32MiB(t *testing.T) {
	p := newPair(t, 0)
	transfer(t, p.a, p.b, addrB4, 32<<20)
	st := p.a.Stats()
	t.Logf("sender stats: %+v; pump max batch %d, multi-packet reads %d", st, p.pump.maxBatch.Load(), p.pump.multi.Load())
	if p.pump.multi.Load() == 0 {
		t.Error("Read never returned more than one packet")
	}
	if st.OutGSO == 0 {
		t.Error("no GSO segment reached the link endpoint")
	}
	if st.OutDropped != 0 {
		t.Logf("note: %d outbound drops", st.OutDropped)
	}
}

func TestBulkTransferIPv6(t *testing.T) {
	p := newPair(t, 1500)
	transfer(t, p.a, p.b, addrB6, 8<<20)
	if p.a.Stats().OutGSO == 0 {
		t.Error("no IPv6 GSO segment reached the link endpoint")
	}
}

func TestUDPRoundTrip(t *testing.T) {
	for _, dst := range []netip.Addr{addrB4, addrB6} {
		t.Run(dst.String(), func(t *testing.T) {
			p := newPair(t, 0)
			pc, err := p.b.ListenUDP(netip.AddrPortFrom(netip.Addr{}, 5353))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(bytes.ToUpper(buf[:n]), from)
				}
			}()
			network := "udp4"
			if dst.Is6() {
				network = "udp6"
			}
			c, err := p.a.DialContext(testCtx(t), network, netip.AddrPortFrom(dst, 5353).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:n]) != "PING" {
				t.Fatalf("got %q", buf[:n])
			}
		})
	}
}

func TestPing(t *testing.T) {
	p := newPair(t, 0)
	for _, dst := range []netip.Addr{addrB4, addrB6} {
		rtt, err := p.a.Ping(testCtx(t), dst)
		if err != nil {
			t.Fatalf("ping %v: %v", dst, err)
		}
		if rtt <= 0 {
			t.Fatalf("ping %v: rtt %v", dst, rtt)
		}
		t.Logf("ping %v: %v", dst, rtt)
	}
	// Nobody answers for this one: the context decides.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.a.Ping(ctx, netip.MustParseAddr("100.96.0.99")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping to nobody: %v, want deadline exceeded", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Addrs: []netip.Addr{{}}},
		{Addrs: []netip.Addr{addrA4}, MTU: 100},
		{Addrs: []netip.Addr{addrA4}, MaxConnsPerSource: -1},
		{Addrs: []netip.Addr{addrA4}, MaxConns: -1},
		{Addrs: []netip.Addr{addrA4}, ListenBacklog: -1},
	} {
		if s, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			if s != nil {
				s.Close()
			}
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}
