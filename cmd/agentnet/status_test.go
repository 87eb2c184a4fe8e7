package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/overlay"
)

// TestStatusTable: every column of the human status starts at the same
// rune offset on every row, long dids (shortened with "…") and empty
// fields included.
func TestStatusTable(t *testing.T) {
	st := overlay.Status{Coordinator: "https://127.0.0.1:8443", Connected: true, MapSerial: 7, Listen: "127.0.0.1:41641",
		Self: overlay.PeerStatus{Name: "planner", IPv4: "100.96.0.1", IPv6: "fd7a:115c:a1e0::1",
			DID: "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", Online: true},
		Peers: []overlay.PeerStatus{
			{Name: "search-with-a-long-name", IPv4: "100.96.0.2", IPv6: "fd7a:115c:a1e0::2", DID: "did:key:short", Online: true,
				Endpoint: "192.0.2.1:41641", Path: &overlay.PathStatus{Kind: "direct", Transport: "udp", Endpoint: "192.0.2.1:41641"}, LastHandshake: time.Now(), HandshakeAge: 3.4, RxBytes: 1 << 21, TxBytes: 1500},
			{Name: "w", IPv4: "100.96.0.3"},
			{Name: "r", IPv4: "100.96.0.4", Path: &overlay.PathStatus{Kind: "relay", Transport: "tcp", Relay: "r1", Endpoint: "198.51.100.2:3478",
				Reason: "UDP to relay blocked; using tcp"}},
		}}
	var b bytes.Buffer
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 8 || lines[7] != "r: relay r1 via tcp: UDP to relay blocked; using tcp" || lines[0] != "coordinator https://127.0.0.1:8443: connected, map serial 7" || lines[1] != "" {
		t.Fatalf("status:\n%s", b.String())
	}
	table := lines[2:7]
	starts := func(l string) []int { // rune offsets where a column starts
		var out []int
		r := []rune(l)
		for i := range r {
			if r[i] != ' ' && (i == 0 || i >= 2 && r[i-1] == ' ' && r[i-2] == ' ') {
				out = append(out, i)
			}
		}
		return out
	}
	want := starts(table[0])
	if len(want) != 10 {
		t.Fatalf("header has %d columns: %q", len(want), table[0])
	}
	for _, l := range table[1:] {
		if got := starts(l); !slices.Equal(got, want) {
			t.Errorf("row %q: columns at %v, header at %v\n%s", l, got, want, b.String())
		}
		if strings.HasSuffix(l, " ") {
			t.Errorf("row %q has trailing spaces", l)
		}
	}
	for _, w := range []string{"did:key:z6MkhaXgBZDv…2doK", "self", "direct 192.0.2.1:41641", "relay r1 via tcp", "3s ago", "2.0M", "1.5K"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("status lacks %q:\n%s", w, b.String())
		}
	}
	t.Log("\n" + b.String())
}
