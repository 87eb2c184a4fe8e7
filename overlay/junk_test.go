package overlay_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
)

// TestJunkCounted (issue 17 item 6): junk sent to a node's WireGuard port
// gets no reply and is counted by kind in Status (agentnet status --json)
// and in the Prometheus metrics.
func TestJunkCounted(t *testing.T) {
	n := testnet.New(t)
	cfg := n.NodeConfig("alpha")
	cfg.MetricsListen = "127.0.0.1:0"
	a := n.StartNodeConfig(cfg)
	b := n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)

	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a.Status().Listen))
	junk, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()

	wg := func(typ uint32, size int) []byte {
		b := make([]byte, size)
		rand.Read(b)
		binary.LittleEndian.PutUint32(b, typ)
		return b
	}
	const each = 20
	kinds := []struct {
		kind string
		pkt  []byte
	}{
		{"not_wireguard", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"not_wireguard", bytes.Repeat([]byte{0xff}, 200)},
		{"too_short", []byte{1}},
		{"too_short", wg(2, 40)},          // a response is 92 bytes
		{"too_short", wg(4, 20)},          // data is at least 32
		{"wireguard_invalid", wg(1, 148)}, // random MAC1
		{"wireguard_invalid", wg(3, 100)}, // a cookie reply is 64 bytes
		{"wireguard_unknown", wg(4, 96)},  // data naming no session of ours
		{"disco_failed", append([]byte("A\x6e\xf0\x9f\x94\x8e"), wg(0, 80)...)},
	}
	want := map[string]uint64{}
	for _, k := range kinds {
		want[k.kind] += each
		for range each {
			if _, err := junk.WriteToUDP(k.pkt, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := func() map[string]uint64 {
		j := a.Status().Paths.Junk
		return map[string]uint64{"not_wireguard": j.NotWireGuard, "too_short": j.TooShort,
			"wireguard_invalid": j.WireGuardInvalid, "wireguard_unknown": j.WireGuardUnknown, "disco_failed": j.DiscoFailed}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !atLeast(got(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("junk counted %v, want at least %v", got(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := scrapeMetrics(t, a.MetricsAddr())
	for kind, w := range want {
		if v, ok := metricValue(m, "agentnet_node_junk_packets_total", "kind", kind); !ok || v < float64(w) {
			t.Errorf("agentnet_node_junk_packets_total{kind=%q} = %v (present %v), want >= %d", kind, v, ok, w)
		}
	}
	for _, r := range []string{"rate_limited", "queue_full"} {
		if _, ok := metricValue(m, "agentnet_node_handshake_initiations_unread_total", "reason", r); !ok {
			t.Errorf("agentnet_node_handshake_initiations_unread_total{reason=%q} missing", r)
		}
	}
	// Junk is never answered.
	junk.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := junk.ReadFromUDP(make([]byte, 1500)); err == nil {
		t.Fatalf("node answered junk with %d bytes", n)
	}
	var _ overlay.JunkStats = a.Status().Paths.Junk
}

func atLeast(got, want map[string]uint64) bool {
	for k, w := range want {
		if got[k] < w {
			return false
		}
	}
	return true
}
