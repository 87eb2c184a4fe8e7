package relay

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/agentnet/agentnet/wire"
)

// FuzzServerInput sends raw bytes to the relay's UDP listener and, as one
// stream, to its TCP listener: whatever arrives, the relay must not crash
// (a panic in any of pion's goroutines ends the test binary) and must go
// on answering STUN.
func FuzzServerInput(f *testing.F) {
	s := startRelay(f, nil)
	udpAddr := addrOf(f, s, wire.TransportUDP).Addr
	tcpAddr := addrOf(f, s, wire.TransportTCP).Addr

	bind, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	alloc, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.NewUsername("4102444800:a"), stun.NewRealm(Realm), stun.NewNonce("nonce"),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}},
		stun.NewShortTermIntegrity("x"), stun.Fingerprint)
	f.Add(bind.Raw)
	f.Add(alloc.Raw)
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})   // ChannelData, no channel bound
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})               // ChannelData claiming 64 KiB
	f.Add([]byte{0x00, 0x17, 0x00, 0x08, 0x21, 0x12})   // truncated Send indication
	f.Add(append(append([]byte{}, bind.Raw[:4]...), 0)) // truncated header
	long := binary.BigEndian.AppendUint16([]byte{0x00, 0x01}, 0xfffc)
	f.Add(append(long, bind.Raw[4:]...)) // length far past the datagram
	f.Add([]byte{})

	check := func(t *testing.T) {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(udpAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 1500)
		for range 5 {
			if _, err := c.Write(bind.Raw); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if n, err := c.Read(buf); err == nil && stun.IsMessage(buf[:n]) {
				return
			}
		}
		t.Fatal("the relay stopped answering STUN binding requests")
	}
	// One TCP stream across inputs (reconnected when the relay ends it):
	// a connection per input would run out of loopback ports in
	// TIME_WAIT within a minute of fuzzing.
	var tc net.Conn
	defer func() {
		if tc != nil {
			tc.Close()
		}
	}()
	f.Fuzz(func(t *testing.T, data []byte) {
		uc, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(udpAddr))
		if err != nil {
			t.Fatal(err)
		}
		uc.Write(data)
		uc.Close()
		for range 2 {
			if tc == nil {
				if tc, err = net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(tcpAddr)); err != nil {
					t.Fatal(err)
				}
			}
			tc.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := tc.Write(data); err != nil {
				tc.Close()
				tc = nil
				continue
			}
			break
		}
		check(t)
	})
}
