package netstack

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// FuzzIngress writes arbitrary packets into the stack's tun.Device, as
// wireguard-go does with what it decrypts (issue 17 catalogue: netstack
// ingress). A TCP listener and a UDP socket are open so packets reach the
// transport layer. Nothing may panic, and Write accepts every batch
// (invalid packets are dropped inside the stack, not reported as errors).
func FuzzIngress(f *testing.F) {
	self := netip.MustParseAddr("100.96.0.1")
	peer := netip.MustParseAddr("100.96.0.2")
	st, err := New(Config{Addrs: []netip.Addr{self, netip.MustParseAddr("fd7a:115c:a1e0::1")}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	ln, err := st.ListenTCP(netip.AddrPortFrom(self, 80))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	pc, err := st.ListenUDP(netip.AddrPortFrom(self, 53))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { pc.Close() })

	f.Add(ingressV4(peer, self, header.TCPProtocolNumber, tcpSYN(40000, 80)))
	f.Add(ingressV4(peer, self, header.UDPProtocolNumber, udpDatagram(5353, 53, []byte("hello"))))
	f.Add(ingressV4(peer, self, header.ICMPv4ProtocolNumber, []byte{8, 0, 0, 0, 0, 1, 0, 1}))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 17, 64})
	f.Add([]byte{0x45})
	f.Add([]byte{})

	const offset = 16
	f.Fuzz(func(t *testing.T, pkt []byte) {
		buf := make([]byte, offset+len(pkt))
		copy(buf[offset:], pkt)
		if _, err := st.TUN().Write([][]byte{buf}, offset); err != nil {
			t.Fatalf("Write: %v", err)
		}
	})
}

func ingressV4(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, l4 []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(l4))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(proto),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], l4)
	return b
}

func tcpSYN(sport, dport uint16) []byte {
	b := make([]byte, header.TCPMinimumSize)
	header.TCP(b).Encode(&header.TCPFields{SrcPort: sport, DstPort: dport, SeqNum: 1, DataOffset: header.TCPMinimumSize,
		Flags: header.TCPFlagSyn, WindowSize: 65535})
	return b
}

func udpDatagram(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(len(b))})
	copy(b[header.UDPMinimumSize:], payload)
	return b
}
