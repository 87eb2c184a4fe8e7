package overlay

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// benchPeers returns n distinct WireGuard peers as peerFromNode builds them.
func benchPeers(n int) map[[32]byte]wgPeer {
	m := make(map[[32]byte]wgPeer, n)
	for i := range n {
		var k [32]byte
		binary.BigEndian.PutUint32(k[:], uint32(i)+1)
		k[31] = 0x5a
		v4 := netip.AddrFrom4([4]byte{100, 96, byte(i >> 8), byte(i)})
		v6 := netip.AddrFrom16([16]byte{0: 0xfd, 14: byte(i >> 8), 15: byte(i)})
		m[k] = wgPeer{
			key:       k,
			keepalive: keepaliveFor([32]byte{0x80}, k),
			endpoint:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), uint16(40000+i)),
			allowed:   []netip.Prefix{netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)},
		}
	}
	return m
}

// BenchmarkWGDiff measures the UAPI diff of a map change where one peer
// out of n moved (new endpoint): the common case of a netmap update.
func BenchmarkWGDiff(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			old := benchPeers(n)
			cur := benchPeers(n)
			for k, p := range cur {
				p.endpoint = netip.MustParseAddrPort("198.51.100.1:51820")
				cur[k] = p
				break
			}
			if d := wgDiff(old, cur); strings.Count(d, "public_key=") != 1 {
				b.Fatalf("diff touches %d peers, want 1:\n%s", strings.Count(d, "public_key="), d)
			}
			b.ReportAllocs()
			for b.Loop() {
				_ = wgDiff(old, cur)
			}
		})
	}
}

// BenchmarkParseWGStats measures parsing UAPI "get" output for 100 peers,
// as wireguard-go writes it.
func BenchmarkParseWGStats(b *testing.B) {
	const n = 100
	var sb strings.Builder
	sb.WriteString("private_key=" + strings.Repeat("ab", 32) + "\nlisten_port=51820\n")
	for k := range benchPeers(n) {
		fmt.Fprintf(&sb, "public_key=%s\nendpoint=%s\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n"+
			"tx_bytes=123456789\nrx_bytes=987654321\npersistent_keepalive_interval=25\nallowed_ip=100.96.0.1/32\nallowed_ip=fd00::1/128\nprotocol_version=1\n",
			hex.EncodeToString(k[:]), peerEndpointString(k))
	}
	sb.WriteString("errno=0\n")
	uapi := sb.String()
	if got := parseWGStats(uapi); len(got) != n {
		b.Fatalf("parsed %d peers, want %d", len(got), n)
	}
	b.SetBytes(int64(len(uapi)))
	b.ReportAllocs()
	for b.Loop() {
		_ = parseWGStats(uapi)
	}
}
