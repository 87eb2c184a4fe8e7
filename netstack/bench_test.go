package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
)

// Throughput benchmarks: one TCP stream from side A to side B, A writes
// 64 KiB per iteration, B discards. Compare ours with wireguard-go's stock
// tun/netstack over the same back-to-back pump (no crypto: isolates the
// seam) and over real wireguard-go devices (bindtest channel bind).
//
//	go test -run '^$' -bench Throughput -benchmem ./netstack/

const benchChunk = 64 << 10

type dialFunc func(ctx context.Context, ap netip.AddrPort) (net.Conn, error)
type listenFunc func(ap netip.AddrPort) (net.Listener, error)

func benchStream(b *testing.B, dl func() (dialFunc, listenFunc)) {
	dial, listen := dl()
	ln, err := listen(netip.AddrPortFrom(addrB4, 5001))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		done <- n
	}()
	c, err := dial(context.Background(), netip.AddrPortFrom(addrB4, 5001))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if n := <-done; n != int64(b.N)*benchChunk {
		b.Fatalf("received %d bytes, want %d", n, int64(b.N)*benchChunk)
	}
	b.StopTimer()
}

func ourDialListen(a, bs *Stack) (dialFunc, listenFunc) {
	return func(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
			return a.DialContext(ctx, "tcp", ap.String())
		}, func(ap netip.AddrPort) (net.Listener, error) {
			return bs.ListenTCP(ap)
		}
}

func BenchmarkThroughput(b *testing.B) {
	b.Run("agentnet/pump", func(b *testing.B) {
		p := newPair(b, 0)
		benchStream(b, func() (dialFunc, listenFunc) { return ourDialListen(p.a, p.b) })
	})
	b.Run("stock/pump", func(b *testing.B) {
		devA, netA, devB, netB := newStockPair(b)
		var pp pump
		pp.run(devA, devB, DefaultMTU)
		pp.run(devB, devA, DefaultMTU)
		b.Cleanup(func() { devA.Close(); devB.Close(); pp.wg.Wait() })
		benchStream(b, func() (dialFunc, listenFunc) { return stockDialListen(netA, netB) })
	})
	b.Run("agentnet/wireguard", func(b *testing.B) {
		p := newWGPair(b)
		benchStream(b, func() (dialFunc, listenFunc) { return ourDialListen(p.a, p.b) })
	})
	b.Run("stock/wireguard", func(b *testing.B) {
		devA, netA, devB, netB := newStockPair(b)
		wgOver(b, devA, devB)
		benchStream(b, func() (dialFunc, listenFunc) { return stockDialListen(netA, netB) })
	})
}

func newStockPair(b *testing.B) (tun.Device, *wgnetstack.Net, tun.Device, *wgnetstack.Net) {
	devA, netA, err := wgnetstack.CreateNetTUN([]netip.Addr{addrA4}, nil, DefaultMTU)
	if err != nil {
		b.Fatal(err)
	}
	devB, netB, err := wgnetstack.CreateNetTUN([]netip.Addr{addrB4}, nil, DefaultMTU)
	if err != nil {
		b.Fatal(err)
	}
	return devA, netA, devB, netB
}

func stockDialListen(a, bs *wgnetstack.Net) (dialFunc, listenFunc) {
	return func(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
			return a.DialContextTCPAddrPort(ctx, ap)
		}, func(ap netip.AddrPort) (net.Listener, error) {
			return bs.ListenTCPAddrPort(ap)
		}
}

// wgOver joins two tun.Devices with wireguard-go, as newWGPair does.
func wgOver(b *testing.B, devA, devB tun.Device) {
	p := newWGPairFor(b, devA, devB)
	b.Cleanup(func() { p[0].Close(); p[1].Close() })
}

func newWGPairFor(tb testing.TB, devA, devB tun.Device) [2]*device.Device {
	keyA, keyB := genKey(tb), genKey(tb)
	binds := bindtest.NewChannelBinds()
	logger := device.NewLogger(device.LogLevelError, "")
	d := [2]*device.Device{device.NewDevice(devA, binds[0], logger), device.NewDevice(devB, binds[1], logger)}
	configure(tb, d[0], keyA, keyB, addrB4, addrB6, 1)
	configure(tb, d[1], keyB, keyA, addrA4, addrA6, 2)
	for _, x := range d {
		if err := x.Up(); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}
