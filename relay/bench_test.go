package relay

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentnet/agentnet/relay/internal/udpbatch"
	"github.com/agentnet/agentnet/wire"
)

// BenchmarkRelayUDP measures one-way relaying between two TURN clients over
// loopback UDP (ChannelData both legs), 1280-byte packets like WireGuard's.
// MB/s counts bytes that arrived; loss_% is what the path dropped.
func BenchmarkRelayUDP(b *testing.B) { benchRelay(b, wire.TransportUDP) }

// BenchmarkRelayTCP is the same with the sender on TURN over TCP.
func BenchmarkRelayTCP(b *testing.B) { benchRelay(b, wire.TransportTCP) }

func benchRelay(b *testing.B, transport string) {
	s := startRelay(b, func(c *Config) { c.AllowLoopback = true; c.BandwidthPerUser = -1 })
	a := dial(b, s, transport, "a")
	aAddr := allocate(b, a)
	r := dial(b, s, wire.TransportUDP, "b")
	rAddr := allocate(b, r)
	exchange(b, a, aAddr, r, rAddr)
	// Let the channel binds complete so data goes as ChannelData.
	time.Sleep(300 * time.Millisecond)

	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			r.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, _, err := r.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(int64(n))
		}
	}()
	payload := make([]byte, 1280)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := a.WriteTo(payload, rAddr); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	elapsed := time.Since(start) - 300*time.Millisecond
	b.StopTimer()
	sent := int64(b.N * len(payload))
	b.ReportMetric(float64(got.Load())/elapsed.Seconds()/1e6, "MB/s_received")
	b.ReportMetric(100*float64(sent-got.Load())/float64(sent), "loss_%")
	st := s.Stats()
	b.ReportMetric(100*float64(st.BytesToPeers)/float64(sent), "relayed_in_%")
	b.ReportMetric(100*float64(st.BytesFromPeers)/float64(sent), "relayed_out_%")
}

// BenchmarkRelayServer measures the relay alone: a TURN client's socket
// sends ready-made ChannelData frames (RFC 8656 §12.4) as fast as it can,
// and a plain UDP peer counts what the relay delivers. The client-side
// pion code is out of the loop, so this is the server's per-packet cost.
func BenchmarkRelayServer(b *testing.B) {
	s := startRelay(b, func(c *Config) { c.AllowLoopback = true; c.BandwidthPerUser = -1 })
	a := dial(b, s, wire.TransportUDP, "a")
	allocate(b, a)
	peer := loopbackUDP(b)
	udpbatch.Tune(peer)
	// The first packet to a peer creates the permission and binds channel
	// 0x4000 (pion's first channel number).
	for range 3 {
		a.WriteTo([]byte("bind"), peer.LocalAddr().(*net.UDPAddr).AddrPort())
		time.Sleep(100 * time.Millisecond)
	}
	frame := make([]byte, 4+1280)
	frame[0], frame[1] = 0x40, 0x00
	frame[2], frame[3] = byte(1280>>8), byte(1280&0xff)

	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			if n == 1280 {
				got.Add(int64(n))
			}
		}
	}()
	b.SetBytes(1280)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := a.WriteRaw(frame); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	elapsed := time.Since(start) - 300*time.Millisecond
	b.StopTimer()
	sent := int64(b.N * 1280)
	b.ReportMetric(float64(got.Load())/elapsed.Seconds()/1e6, "MB/s_received")
	b.ReportMetric(100*float64(sent-got.Load())/float64(sent), "loss_%")
}
