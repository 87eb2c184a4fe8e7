package coordinator

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// benchCoordinator returns a Coordinator with just what mapFor reads: a
// snapshot of peers+1 nodes (the first is "self") and a signing key. No
// store, no listener.
func benchCoordinator(b testing.TB, peers int) (*Coordinator, string) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	c := &Coordinator{
		cfg:     Config{Domain: wire.DefaultDomain},
		now:     time.Now,
		signKey: key,
		prefix4: wire.DefaultPrefix4,
		ula:     netip.MustParsePrefix("fd12:3456:789a::/48"),
		streams: make(map[string]*stream),
	}
	nodes := make([]wire.Node, peers+1)
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range nodes {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		var wg [32]byte
		copy(wg[:], pub)
		nodes[i] = wire.Node{
			Name:      fmt.Sprintf("agent-%05d", i),
			DID:       wire.DID(pub),
			WGKey:     wire.WGKeyString(wg),
			IPv4:      netip.AddrFrom4([4]byte{100, 96, byte(i >> 8), byte(i)}),
			IPv6:      netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x12, 14: byte(i >> 8), 15: byte(i)}),
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 51820)},
			LastSeen:  created,
			Created:   created,
		}
		if i%2 == 0 { // half the nodes online
			c.streams[nodes[i].DID] = &stream{did: nodes[i].DID}
		}
	}
	c.snap.Store(testSnapshot(c, 42, nodes))
	return c, nodes[0].DID
}

// BenchmarkBuildAndSignMap measures mapFor, the work every stream does per
// change: build the node's map from the snapshot, marshal and sign it.
func BenchmarkBuildAndSignMap(b *testing.B) {
	for _, peers := range []int{100, 1000} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			c, self := benchCoordinator(b, peers)
			signed, _, err := c.mapFor(self)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(signed.Payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.mapFor(self); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignVerifyMap measures wire.Sign and Signed.Verify (which
// also decodes the map, as a node does) for a map with 100 and 1,000 peers.
func BenchmarkSignVerifyMap(b *testing.B) {
	for _, peers := range []int{100, 1000} {
		c, self := benchCoordinator(b, peers)
		signed, _, err := c.mapFor(self)
		if err != nil {
			b.Fatal(err)
		}
		m, err := signed.Verify(c.PublicKey())
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("sign/peers=%d", peers), func(b *testing.B) {
			b.SetBytes(int64(len(signed.Payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := wire.Sign(c.signKey, m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("verify/peers=%d", peers), func(b *testing.B) {
			b.SetBytes(int64(len(signed.Payload)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := signed.Verify(c.PublicKey()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAssembledMapPayload: the map mapFor assembles from cached node
// encodings is one valid JSON object that decodes to the map json.Marshal
// of the same wire.Map would give, and re-encodes byte for byte.
func TestAssembledMapPayload(t *testing.T) {
	c, self := benchCoordinator(t, 7)
	signed, node, err := c.mapFor(self)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(signed.Payload) {
		t.Fatalf("payload is not valid JSON: %s", signed.Payload)
	}
	m, err := signed.Verify(c.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if m.Self.DID != self || node.DID != self || len(m.Peers) != 7 || m.Serial != 42 || m.Filter == nil {
		t.Fatalf("decoded map: self %s, %d peers, serial %d, filter %v", m.Self.DID, len(m.Peers), m.Serial, m.Filter)
	}
	again, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(signed.Payload) {
		t.Fatalf("assembled payload differs from json.Marshal of the decoded map:\n%s\n%s", signed.Payload, again)
	}
}

// testSnapshot is the snapshot a full refresh would make of nodes (sorted
// by name) at serial.
func testSnapshot(c *Coordinator, serial uint64, nodes []wire.Node) *snapshot {
	if c.idOf == nil {
		c.idOf = map[string]uint32{}
	}
	s := &snapshot{gen: 1, serial: serial, nodes: nodes, ids: make([]uint32, len(nodes)), enc: make([]*nodeEnc, len(nodes))}
	for i, n := range nodes {
		s.ids[i] = c.nodeID(s, n.DID)
		s.enc[i] = &nodeEnc{}
	}
	s.pos = make([]int32, len(s.dids))
	for i, id := range s.ids {
		s.pos[id] = int32(i)
	}
	return s
}

// BenchmarkStreamDelta measures what every open stream does per change once
// it has its first map: build and sign the delta of one changed peer.
func BenchmarkStreamDelta(b *testing.B) {
	for _, peers := range []int{1000, 5000} {
		for _, shared := range []bool{false, true} {
			b.Run(fmt.Sprintf("peers=%d/shared=%v", peers, shared), func(b *testing.B) {
				c, self := benchCoordinator(b, peers)
				var v streamView
				if _, err := c.streamMessage(self, &v, true); err != nil {
					b.Fatal(err)
				}
				// The next generation: one peer changed.
				s0 := c.snap.Load()
				id := s0.ids[peers/2]
				s1 := &snapshot{gen: s0.gen + 1, serial: s0.serial + 1, nodes: s0.nodes, ids: s0.ids, pos: s0.pos, dids: s0.dids,
					log: []nodeChange{{s0.gen + 1, id}}, logFrom: s0.gen, policy: s0.policy, made: time.Now(), deltas: new(sync.Map),
					enc: append([]*nodeEnc(nil), s0.enc...)}
				s1.enc[peers/2] = &nodeEnc{}
				c.snap.Store(s1)
				b.ReportAllocs()
				var size int
				for b.Loop() {
					if !shared {
						s1.deltas = new(sync.Map) // every stream signs its own
					}
					w := v
					w.sent = append([]uint64(nil), v.sent...)
					msg, err := c.streamMessage(self, &w, true)
					if err != nil || msg == nil || msg.Type != wire.MsgDelta {
						b.Fatalf("%v %v", msg, err)
					}
					size = len(msg.Delta.Payload)
				}
				b.ReportMetric(float64(size), "bytes/delta")
			})
		}
	}
}
