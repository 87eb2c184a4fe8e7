package overlay

import (
	"net"
	"testing"
)

// TestSocketDrops: datagrams the kernel drops because nobody reads the
// socket show in socketDrops (they feed udp_receive_drops_total).
func TestSocketDrops(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetReadBuffer(4096) // the kernel's minimum: a few datagrams fill it
	s := &bindSocket{uc: uc}
	if d, ok := s.socketDrops(); !ok || d != 0 {
		t.Fatalf("fresh socket: drops %d, ok %v; want 0, true", d, ok)
	}
	tx, err := net.DialUDP("udp4", nil, uc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	pkt := make([]byte, 1000)
	for range 500 {
		tx.Write(pkt)
	}
	if d, ok := s.socketDrops(); !ok || d == 0 {
		t.Fatalf("after 500 unread datagrams: drops %d, ok %v; want > 0", d, ok)
	}
}
