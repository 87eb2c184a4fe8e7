package relay

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentnet/agentnet/relay/turnclient"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
)

// stallConn is a TCP connection to the relay whose reader can be made to
// stop reading: the client that stopped reading from the relay.
type stallConn struct {
	net.Conn
	stall     chan struct{}
	closed    chan struct{}
	stallOnce sync.Once
	closeOnce sync.Once
}

func (c *stallConn) Read(p []byte) (int, error) {
	select {
	case <-c.stall:
		<-c.closed
		return 0, net.ErrClosed
	default:
	}
	return c.Conn.Read(p)
}

func (c *stallConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// pace sends size-byte packets from uc to to at about rate packets per
// second until stop is closed; it returns how many it sent.
func pace(uc *net.UDPConn, to netip.AddrPort, rate, size int, stop <-chan struct{}) int {
	const tick = 5 * time.Millisecond
	per := rate * int(tick) / int(time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	buf := make([]byte, size)
	sent := 0
	for {
		select {
		case <-stop:
			return sent
		case <-t.C:
			for range per {
				if _, err := uc.WriteToUDPAddrPort(buf, to); err == nil {
					sent++
				}
			}
		}
	}
}

// TestSlowTCPClientDropped: a TCP client that stops reading from the relay
// while a peer floods its relayed address is dropped within a few
// ClientWriteTimeouts (issue 17 item 11: it was held forever), and another
// client relayed meanwhile keeps at least 95% of its throughput, measured
// as the share of a paced stream delivered before and while the first
// client is stuck.
func TestSlowTCPClientDropped(t *testing.T) {
	s := startRelay(t, func(c *Config) {
		c.AllowLoopback = true
		c.BandwidthPerUser = -1
		c.ClientWriteTimeout = time.Second
	})
	// The stuck client, over TCP.
	var sc *stallConn
	u, p, _ := turncred.Credentials(s.Cred().Secret, "stuck", time.Hour, time.Now())
	r := wire.Relay{Name: s.Cred().Name, Addrs: []wire.RelayAddr{addrOf(t, s, wire.TransportTCP)}, Username: u, Password: p}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stuck, err := turnclient.DialProbe(ctx, turnclient.Config{Relay: r, Transport: wire.TransportTCP,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			sc = &stallConn{Conn: c, stall: make(chan struct{}), closed: make(chan struct{})}
			return sc, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	stuckAddr := allocate(t, stuck)
	flood := loopbackUDP(t)
	if _, err := stuck.WriteTo([]byte("permit"), flood.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}

	// The other client, over TCP too, and its peer.
	other := dial(t, s, wire.TransportTCP, "other")
	otherAddr := allocate(t, other)
	peer := loopbackUDP(t)
	if _, err := other.WriteTo([]byte("permit"), peer.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := other.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	const rate, size, window = 4000, 1200, 800 * time.Millisecond // 4.8 MB/s offered
	share := func() float64 {
		stop := make(chan struct{})
		done := make(chan int)
		before := got.Load()
		go func() { done <- pace(peer, otherAddr, rate, size, stop) }()
		time.AfterFunc(window, func() { close(stop) })
		sent := <-done
		deadline := time.Now().Add(2 * time.Second) // let the tail arrive
		for got.Load()-before < int64(sent) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		return float64(got.Load()-before) / float64(max(sent, 1))
	}
	base := share()
	if base < 0.5 {
		t.Fatalf("baseline: only %.0f%% of a paced stream relayed", base*100)
	}

	// The stuck client stops reading; a peer floods its relayed address.
	sc.stallOnce.Do(func() { close(sc.stall) })
	stopFlood := make(chan struct{})
	floodDone := make(chan int)
	go func() { floodDone <- pace(flood, stuckAddr, rate, size, stopFlood) }()
	defer func() { close(stopFlood); <-floodDone }()
	during := share()
	t.Logf("delivered share: %.1f%% before, %.1f%% while a client is stuck", base*100, during*100)
	if during < 0.95*base {
		t.Errorf("while a client was stuck the other kept %.1f%% of its throughput, want >= 95%%", during/base*100)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Allocations != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the stuck client was not dropped within 10 s: %+v", s.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.Stats().Refused[ReasonSlowClient]; n == 0 {
		t.Fatalf("Refused[%s] = 0", ReasonSlowClient)
	}
}
