package overlay_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"

	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/wire"
)

// TestInitiationFlood (issue 17 item 4): while bravo streams TCP to alpha
// through the overlay, handshake initiations flood alpha's WireGuard port
// from many source ports of 127.0.0.1 (loopback has one address: the
// ports stand in for the sources; the global bucket is what bounds them).
// The stream's throughput under a flood with a valid MAC1 (anyone with
// alpha's public key can make one) is compared with its throughput under
// the same flood with a random MAC1, measured in the same run: it keeps a
// large fraction of it. A new peer, charlie, joins during the flood and
// its first ping to alpha completes within a bound.
//
// Rate and phase length: AGENTNET_FLOOD_PPS (default 20000) and
// AGENTNET_FLOOD_SECONDS (default 3).
func TestInitiationFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test: not in -short")
	}
	if raceEnabled {
		// 20k initiations a second plus three nodes under the race
		// detector (~10x slower) saturate two cores by themselves: the
		// result says nothing about the limiter. .ci/run runs this test
		// without -race right after ./test.sh.
		t.Skip("flood test: runs without -race (.ci/run: go test -run 'TestInitiationFlood' ./overlay)")
	}
	pps := envInt("AGENTNET_FLOOD_PPS", 20000)
	phase := time.Duration(envInt("AGENTNET_FLOOD_SECONDS", 3)) * time.Second
	n := testnet.New(t)
	a := n.StartNode("alpha")
	b := n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	alphaKey, err := wire.ParseWGKey(b.Map().Peers[0].WGKey)
	if err != nil {
		t.Fatal(err)
	}
	to := netip.MustParseAddrPort(a.Status().Listen)

	// The stream: bravo writes to a sink on alpha as fast as it can.
	ln, err := a.Listen("tcp", ":7100")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var rcvd atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					k, err := c.Read(buf)
					rcvd.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := b.Dial(ctxT(t, 10*time.Second), "tcp", "alpha:7100")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		buf := make([]byte, 32<<10)
		for ctx.Err() == nil {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	measure := func(d time.Duration) float64 {
		r0 := rcvd.Load()
		time.Sleep(d)
		return float64(rcvd.Load()-r0) / d.Seconds()
	}

	time.Sleep(500 * time.Millisecond) // the stream's window opens
	junk := floodInitiation(alphaKey, false)
	stop := flood(t, to, junk, pps)
	base := measure(phase)
	stop()

	valid := floodInitiation(alphaKey, true)
	stop = flood(t, to, valid, pps)
	under := measure(phase)

	// A new peer joins under the flood; alpha's map gets a peer it has not
	// configured yet, so the lazy-peer reader is in play.
	ch := n.StartNode("charlie")
	testnet.WaitPeers(t, a, b, ch)
	start := time.Now()
	var first time.Duration
	for time.Since(start) < 30*time.Second {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		_, err := ch.Ping(pctx, "alpha")
		pcancel()
		if err == nil {
			first = time.Since(start)
			break
		}
	}
	underNew := measure(phase)
	stop()
	cancel()

	st := a.Status().Paths
	t.Logf("flood %d pkt/s: stream %.1f MB/s under random-MAC1 junk, %.1f MB/s under valid-MAC1 initiations (%.0f%%), %.1f MB/s with a lazy peer waiting; charlie's first ping after %v; alpha junk %+v, initiations unread %+v",
		pps, base/1e6, under/1e6, 100*under/base, underNew/1e6, first, st.Junk, st.InitsUnread)
	if first == 0 {
		t.Fatal("charlie never reached alpha under the flood")
	}
	// Liveness, not speed: the ratios are logged above and measured where
	// speed belongs (BenchmarkInitFlood, and internal/netlab's
	// TestFaultsInitFlood with its >= 90% bar), because this test shares two
	// cores with the rest of ./test.sh. Before the limiter the stream moved
	// nothing under the flood and charlie's first initiation was lost
	// (wireguard-go's 5 s retry: 14-18 s); either is a failure here.
	if first > 5*time.Second {
		t.Errorf("charlie's first ping took %v under the flood, want < 5s (wireguard-go retries a lost initiation after 5 s)", first)
	}
	if base <= 0 {
		t.Fatal("no baseline throughput")
	}
	if under <= 0 || underNew <= 0 {
		t.Errorf("stream moved %.1f / %.1f MB/s under the flood, want it to keep moving", under/1e6, underNew/1e6)
	}
	if st.Junk.WireGuardInvalid == 0 {
		t.Error("random-MAC1 initiations not counted as wireguard_invalid")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// floodInitiation is an initiation to key: MAC1 valid or random.
func floodInitiation(key [32]byte, validMAC1 bool) []byte {
	const size, mac1 = 148, 116
	b := make([]byte, size)
	rand.Read(b)
	binary.LittleEndian.PutUint32(b, 1)
	clear(b[mac1+16:])
	if validMAC1 {
		mk := blake2s.Sum256(append([]byte("mac1----"), key[:]...))
		mac, _ := blake2s.New128(mk[:])
		mac.Write(b[:mac1])
		copy(b[mac1:], mac.Sum(nil))
	}
	return b
}

// flood sends pkt to `to` at pps from 256 source ports until stop.
func flood(t *testing.T, to netip.AddrPort, pkt []byte, pps int) (stop func()) {
	t.Helper()
	var socks []*net.UDPConn
	for range 256 {
		s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, s)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		dst := net.UDPAddrFromAddrPort(to)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		start, sent := time.Now(), 0
		for i := 0; ; {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			due := int(time.Since(start).Seconds() * float64(pps))
			for ; sent < due; sent++ {
				socks[i%len(socks)].WriteToUDP(pkt, dst)
				i++
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		for _, s := range socks {
			s.Close()
		}
	}
}
