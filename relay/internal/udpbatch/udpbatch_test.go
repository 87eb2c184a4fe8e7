package udpbatch

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestBatchWriterReader sends runs of equal and unequal frames through a
// Writer (GSO where the kernel has it) to a Reader (GRO) and to
// a plain socket: every frame must arrive whole, in order, as its own
// datagram.
func TestBatchWriterReader(t *testing.T) {
	listen := func() *net.UDPConn {
		uc := loopbackUDP(t)
		Tune(uc)
		return uc
	}
	src, groDst, plainDst := listen(), listen(), listen()
	var frames [][]byte
	for i, size := range []int{1284, 1284, 1284, 1284, 700, 1284, 1284, 60, 60, 1500, 4, 1284} {
		f := bytes.Repeat([]byte{byte(i + 1)}, size)
		f[0] = 0x40
		frames = append(frames, f)
	}
	for _, dst := range []*net.UDPConn{groDst, plainDst} {
		w := NewWriter(New(src, false))
		to := dst.LocalAddr().(*net.UDPAddr)
		for _, f := range frames {
			if err := w.Add(f, to); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	check := func(name string, next func() ([]byte, error)) {
		for i, want := range frames {
			got, err := next()
			if err != nil {
				t.Fatalf("%s: frame %d: %v", name, i, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: frame %d: got %d bytes (%x...), want %d (%x...)", name, i, len(got), got[:min(4, len(got))], len(want), want[:4])
			}
		}
	}
	groDst.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := NewReader(New(groDst, true), nil)
	check("Reader", func() ([]byte, error) {
		d, from, err := r.Next()
		if err == nil && from.Port != src.LocalAddr().(*net.UDPAddr).Port {
			t.Errorf("from %v, want %v", from, src.LocalAddr())
		}
		return d, err
	})
	if r.Buffered() {
		t.Error("Reader has more datagrams than were sent")
	}
	plainDst.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	check("plain socket", func() ([]byte, error) {
		n, err := plainDst.Read(buf)
		return buf[:n], err
	})
}

// loopbackUDP is a UDP socket on 127.0.0.1, closed when the test ends.
func loopbackUDP(tb testing.TB) *net.UDPConn {
	tb.Helper()
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { uc.Close() })
	return uc
}
