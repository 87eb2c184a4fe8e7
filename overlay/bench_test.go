package overlay_test

import (
	"io"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/testnet"
)

// BenchmarkNodeTCPStream moves one TCP stream between two real nodes
// (coordinator, WireGuard over loopback UDP, gVisor netstacks); compare with
// netstack's BenchmarkThroughput for the stack alone.
func BenchmarkNodeTCPStream(b *testing.B) {
	n := testnet.New(b)
	a, c := n.StartNode("alpha"), n.StartNode("bravo")
	testnet.WaitPeers(b, a, c)
	ln, err := c.Listen("tcp", ":9000")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer conn.Close()
		nb, _ := io.Copy(io.Discard, conn)
		done <- nb
	}()
	conn, err := a.Dial(b.Context(), "tcp", "bravo:9000")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	conn.Close()
	got := <-done
	b.ReportMetric(float64(got)*8/time.Since(start).Seconds()/1e6, "Mbit/s")
}
