package netstack

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// Test addresses: overlay range 100.96.0.0/12 and a ULA for IPv6.
var (
	addrA4 = netip.MustParseAddr("100.96.0.1")
	addrB4 = netip.MustParseAddr("100.96.0.2")
	addrA6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	addrB6 = netip.MustParseAddr("fd7a:115c:a1e0::2")
)

// pumpOffset mimics wireguard-go, which reads at an offset leaving room for
// its transport header.
const pumpOffset = 16

// pump copies batches from one tun.Device to another until Read fails,
// recording batch sizes: it is a wire without WireGuard.
type pump struct {
	wg       sync.WaitGroup
	maxBatch atomic.Int64
	multi    atomic.Int64 // Read calls that returned more than one packet
}

func (p *pump) run(from, to tun.Device, mtu int) {
	p.wg.Go(func() {
		bufs := make([][]byte, from.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, pumpOffset+mtu)
		}
		sizes := make([]int, len(bufs))
		out := make([][]byte, len(bufs))
		for {
			n, err := from.Read(bufs, sizes, pumpOffset)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					panic(err)
				}
				return
			}
			if int64(n) > p.maxBatch.Load() {
				p.maxBatch.Store(int64(n))
			}
			if n > 1 {
				p.multi.Add(1)
			}
			for i := range n {
				out[i] = bufs[i][:pumpOffset+sizes[i]]
			}
			to.Write(out[:n], pumpOffset) // error after close is fine
		}
	})
}

// pair is two Stacks wired back to back through their TUN devices.
type pair struct {
	a, b *Stack
	pump pump
}

func newPair(tb testing.TB, mtu int) *pair {
	tb.Helper()
	return newPairConfig(tb, Config{MTU: mtu}, Config{MTU: mtu})
}

// newPairConfig is newPair with the configs of a and b (Addrs are filled
// in; the MTUs must match).
func newPairConfig(tb testing.TB, ca, cb Config) *pair {
	tb.Helper()
	ca.Addrs = []netip.Addr{addrA4, addrA6}
	a, err := New(ca)
	if err != nil {
		tb.Fatal(err)
	}
	cb.Addrs = []netip.Addr{addrB4, addrB6}
	b, err := New(cb)
	if err != nil {
		tb.Fatal(err)
	}
	mtu := ca.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	p := &pair{a: a, b: b}
	p.pump.run(a.TUN(), b.TUN(), mtu)
	p.pump.run(b.TUN(), a.TUN(), mtu)
	tb.Cleanup(p.close)
	return p
}

func (p *pair) close() {
	p.a.Close()
	p.b.Close()
	p.pump.wg.Wait()
}
