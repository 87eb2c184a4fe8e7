package overlay_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/wire"
)

// coordinatorSigner is the network's map-signing key: a lying coordinator
// signs what it likes.
func coordinatorSigner(t *testing.T, n *testnet.Net) ed25519.PrivateKey {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(n.Dir, "coord", audit.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		t.Fatal("no PEM block in the signing key file")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(ed25519.PrivateKey)
}

// TestLyingCoordinatorKeyTakeover (issue 17 item 1, node side): a
// coordinator signs a map that gives alpha an extra peer "mallory" with
// bravo's WireGuard key and the attacker's endpoint, and another, "eve",
// with alpha's own key. alpha drops all three peers that share a key,
// warns, counts them, and sends nothing to the attacker while trying to
// reach every one of them.
func TestLyingCoordinatorKeyTakeover(t *testing.T) {
	n, a, b, logs := twoNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, "bravo"); err != nil {
		t.Fatalf("ping before: %v", err)
	}

	attacker, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	var got atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := attacker.ReadFromUDP(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	evilEP := attacker.LocalAddr().(*net.UDPAddr).AddrPort()

	m := *a.Map()
	bravo := m.Peers[0]
	mallory := bravo
	mallory.Name, mallory.DID = "mallory", "did:key:mallory"
	mallory.IPv4, mallory.IPv6 = m.Self.IPv4.Next().Next().Next().Next(), netip.Addr{}
	mallory.Endpoints, mallory.Relayed, mallory.DiscoKey = []netip.AddrPort{evilEP}, nil, ""
	eve := mallory
	eve.Name, eve.DID, eve.WGKey = "eve", "did:key:eve", b.Map().Peers[0].WGKey
	eve.IPv4 = mallory.IPv4.Next()
	m.Peers = []wire.Node{bravo, mallory, eve}
	m.Serial += 100
	s, err := wire.Sign(coordinatorSigner(t, n), &m)
	if err != nil {
		t.Fatal(err)
	}
	a.DeliverMapForTest(s)
	if a.Map().Serial != m.Serial {
		t.Fatalf("map not applied: serial %d, want %d", a.Map().Serial, m.Serial)
	}

	for _, name := range []string{"mallory", "eve", "bravo"} {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := a.Ping(pctx, name)
		pcancel()
		if err == nil && name != "bravo" {
			t.Errorf("ping %s succeeded; want no such peer", name)
		}
	}
	time.Sleep(500 * time.Millisecond) // anything sent is on loopback by now
	if g := got.Load(); g != 0 {
		t.Fatalf("attacker received %d datagrams from alpha", g)
	}
	if c := a.Status().KeyConflictPeers; c != 3 {
		t.Fatalf("key conflict peers counted %d, want 3 (bravo, mallory, eve)", c)
	}
	if w := strings.Count(logs.String(), "ignoring them all"); w != 2 {
		t.Fatalf("%d warnings, want one per conflicting key (2):\n%s", w, logs)
	}
	// The same map again: counted again, not warned again.
	m.Serial++
	s, _ = wire.Sign(coordinatorSigner(t, n), &m)
	a.DeliverMapForTest(s)
	if w := strings.Count(logs.String(), "ignoring them all"); w != 2 {
		t.Fatalf("%d warnings after the same conflict again, want still 2", w)
	}
}
