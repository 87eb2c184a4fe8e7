package overlay

import (
	"log/slog"
	"net/netip"
	"os"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/agentnet/agentnet/wire"
)

// discardTUN is the far side of the filter in the batch benchmark: it takes
// every packet and does nothing, so only the filter is measured.
type discardTUN struct{}

func (discardTUN) File() *os.File                         { return nil }
func (discardTUN) Read([][]byte, []int, int) (int, error) { return 0, os.ErrClosed }
func (discardTUN) Write(b [][]byte, _ int) (int, error)   { return len(b), nil }
func (discardTUN) MTU() (int, error)                      { return 1280, nil }
func (discardTUN) Name() (string, error)                  { return "discard", nil }
func (discardTUN) Events() <-chan wgtun.Event             { return nil }
func (discardTUN) Close() error                           { return nil }
func (discardTUN) BatchSize() int                         { return 128 }

// benchFilter is a policy of realistic size: 20 rules each way, a mix of
// single peers and prefixes, with the matching rules last.
func benchFilter() *wire.Filter {
	f := &wire.Filter{PolicyVersion: 1}
	for i := range 19 {
		peer := netip.AddrFrom4([4]byte{100, 97, byte(i), 1}).String()
		r := wire.FilterRule{Rule: "r" + peer, Peers: []string{peer, "fd7a:115c:a1e1::/64"}, Protos: []string{"tcp"}, Ports: ports(uint16(1000 + i))}
		f.Inbound = append(f.Inbound, r)
		f.Outbound = append(f.Outbound, r)
	}
	f.Inbound = append(f.Inbound, wire.FilterRule{Rule: "web", Peers: []string{"100.96.0.0/16"}, Protos: []string{"tcp"}, Ports: ports(80, 443)})
	f.Outbound = append(f.Outbound, wire.FilterRule{Rule: "out", Peers: []string{"100.96.0.0/16"}, Protos: []string{"tcp", "udp"}})
	return f
}

func newBenchFilter(b *testing.B) *filterDevice {
	f := newFilterDevice(discardTUN{}, filterConfig{Logger: slog.New(slog.DiscardHandler)})
	f.setFilter(benchFilter(), fSelf4, fSelf6)
	return f
}

// BenchmarkFilterDecision: one packet through the decision.
//   - allow-rule: a rule allows it, no flow is created (a RST), so the flow
//     miss and the rule walk are measured;
//   - flow-hit: a packet of an established connection;
//   - deny-default / deny-port: denied inbound (no reject), rate-limited
//     log check included.
func BenchmarkFilterDecision(b *testing.B) {
	cases := []struct {
		name string
		dir  direction
		pkt  []byte
	}{
		{"allow-rule", dirIn, tcpPkt(fPeer2, fSelf4, 40000, 443, tcpRST)},
		{"flow-hit", dirIn, tcpPkt(fPeer2, fSelf4, 40001, 80, tcpACK)},
		{"flow-hit-v6-reply", dirIn, udpPkt(fV6P2, fSelf6, 5000, 34000)},
		{"deny-default", dirIn, tcpPkt(fStranger, fSelf4, 40002, 80, tcpSYN)},
		{"deny-port", dirIn, tcpPkt(fPeer2, fSelf4, 40003, 22, tcpSYN)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			f := newBenchFilter(b)
			if c.name == "flow-hit-v6-reply" {
				nf := benchFilter()
				nf.Outbound = append(nf.Outbound, wire.FilterRule{Rule: "v6", Peers: []string{"fd7a:115c:a1e0::2"}})
				f.setFilter(nf, fSelf4, fSelf6)
				var p pktInfo
				f.check(dirOut, udpPkt(fSelf6, fV6P2, 34000, 5000), f.ruleSet(), f.clock(), &p)
			}
			var p pktInfo
			rs, now := f.ruleSet(), f.clock()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				f.check(c.dir, c.pkt, rs, now, &p)
			}
		})
	}
}

// BenchmarkFilterBatch: Write of a 128-packet batch of 16 established TCP
// flows, the shape wireguard-go delivers; reports ns/packet.
func BenchmarkFilterBatch(b *testing.B) {
	f := newBenchFilter(b)
	const batch = 128
	bufs := make([][]byte, batch)
	orig := make([][]byte, batch)
	for i := range bufs {
		pkt := testPkt{src: fPeer2, dst: fSelf4, proto: protoTCP, sport: 40000 + uint16(i%16), dport: 443, flags: tcpACK, payload: make([]byte, 1200)}.build()
		orig[i] = append(make([]byte, rejectOffset), pkt...)
	}
	b.ReportAllocs()
	b.SetBytes(int64(batch * len(orig[0])))
	b.ResetTimer()
	for range b.N {
		copy(bufs, orig)
		if _, err := f.Write(bufs, rejectOffset); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/packet")
}
