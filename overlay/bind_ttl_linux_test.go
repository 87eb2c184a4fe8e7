package overlay

import (
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestBindSendTTL: a datagram sent with SendTTL arrives with that TTL (read
// with IP_RECVTTL), and the next plain datagram keeps the default.
func TestBindSendTTL(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	raw, _ := rc.SyscallConn()
	raw.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1) })
	dst := rc.LocalAddr().(*net.UDPAddr).AddrPort()

	for _, listen := range []string{"127.0.0.1:0", "[::]:0"} {
		b := NewBind(BindConfig{ListenAddr: netip.MustParseAddrPort(listen)})
		if _, _, err := b.Open(0); err != nil {
			t.Fatal(err)
		}
		if err := b.SendTTL([]byte("pre-punch"), dst, 2); err != nil {
			t.Fatalf("%s: SendTTL: %v", listen, err)
		}
		if err := b.Send([][]byte{[]byte("data")}, newUDPEndpoint(dst)); err != nil {
			t.Fatal(err)
		}
		for i, want := range []int{2, 64} {
			buf, oob := make([]byte, 64), make([]byte, 64)
			n, oobn, _, _, err := rc.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil || len(msgs) != 1 || msgs[0].Header.Type != unix.IP_TTL {
				t.Fatalf("%s: datagram %d (%q): control messages %v %v", listen, i, buf[:n], msgs, err)
			}
			if got := int(*(*int32)(unsafe.Pointer(&msgs[0].Data[0]))); got != want && !(i == 1 && got > 2) {
				t.Errorf("%s: datagram %d (%q) arrived with TTL %d, want %d", listen, i, buf[:n], got, want)
			}
		}
		b.Close()
	}
}
