package overlay

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"
)

// TestPathsSynctestPrePunchClash: two peers behind Linux-like NATs
// (memnat_test.go) learn of each other at different moments. A full ping
// that reaches the peer's NAT before the peer has pre-punched leaves an
// UNREPLIED entry there, and the peer's own packets to us then leave from
// another port (the clash): with the old fixed lead time (prePunchLead) a
// skew of more than a second kept both sides relayed until the entries
// expired. With the pre-punch agreement over the relay neither side's full
// ping leaves before the other has pre-punched, so the path goes direct
// within a moment of the later side learning of the earlier one and no
// mapping clashes, whatever the skew up to prePunchMax. Past that bound
// (the relay cannot tell a late peer from a dead relay) the fallback ping
// clashes, and the next slow round, slowRoundEvery after the last full
// ping, finds the entries expired and gets through.
func TestPathsSynctestPrePunchClash(t *testing.T) {
	for _, tc := range []struct {
		name         string
		mapA, mapB   time.Duration // when a, b learn of each other
		within       time.Duration // direct on both sides this long after the later one
		clashAllowed bool
	}{
		{"same moment", 0, 0, 2 * time.Second, false},
		{"b 1.5 s late", 0, 1500 * time.Millisecond, 2 * time.Second, false},
		{"a 1.5 s late", 1500 * time.Millisecond, 0, 2 * time.Second, false},
		{"b 4 s late", 0, 4 * time.Second, 2 * time.Second, false},
		{"a 8 s late", 8 * time.Second, 0, 2 * time.Second, false},
		{"b later than prePunchMax: the next slow round", 0, prePunchMax + 2*time.Second, slowRoundEvery + 5*time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mn := newMemNet()
				a, stopA := newBubbleNode(t, mn, pbHigh)
				defer stopA()
				b, stopB := newBubbleNode(t, mn, pbLow)
				defer stopB()
				natA := mn.newNAT(netip.MustParseAddr("198.18.3.2"), a.sock)
				natB := mn.newNAT(netip.MustParseAddr("198.18.4.2"), b.sock)
				pubA, pubB := natA.publicAddr(a.sock), natB.publicAddr(b.sock)

				first, second := a, b
				firstInfo, secondInfo := b.info(pubB), a.info(pubA)
				skew := tc.mapB - tc.mapA
				if skew < 0 {
					first, second, firstInfo, secondInfo, skew = b, a, secondInfo, firstInfo, -skew
				}
				time.Sleep(min(tc.mapA, tc.mapB)) // fake time
				first.p.setPeerInfo([]peerInfo{firstInfo})
				time.Sleep(skew) // fake time
				second.p.setPeerInfo([]peerInfo{secondInfo})
				took := until(t, tc.within, "both go direct", func() bool {
					return a.path(b.key) == "direct "+pubB.String() && b.path(a.key) == "direct "+pubA.String()
				})
				t.Logf("direct %v after the later side learnt of the earlier", took)
				sendData(t, a, b)
				sendData(t, b, a)
				ca, _ := mn.natStats(natA)
				cb, _ := mn.natStats(natB)
				if !tc.clashAllowed && ca+cb != 0 {
					t.Fatalf("mappings clashed: %d at a's NAT, %d at b's", ca, cb)
				}
				if tc.clashAllowed && ca+cb == 0 {
					t.Fatal("no clash: the case does not test what it says")
				}
			})
		})
	}
}

// TestPathsSynctestPrePunchProbeSkew: the lab's relay-then-direct case
// behind NATs. Direct traffic between the NATs is dropped while slow rounds
// pass; then, between two rounds, it passes, and the coordinator's probe
// reaches the two sides at different moments (under load): the path goes
// direct at once, with no clash: the earlier side's prePunched starts the
// later side's round (it pre-punches and says so) instead of its probe
// delay. (Without prePunched, with the fixed lead time, every case but
// "together" stayed relayed.)
func TestPathsSynctestPrePunchProbeSkew(t *testing.T) {
	for _, tc := range []struct {
		name           string
		delayA, delayB time.Duration
	}{
		{"together", 100 * time.Millisecond, 100 * time.Millisecond},
		{"b 1.5 s late", 100 * time.Millisecond, 1600 * time.Millisecond},
		{"a 1.5 s late", 1600 * time.Millisecond, 100 * time.Millisecond},
		{"b 5 s late", 0, maxProbeDelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mn := newMemNet()
				a, stopA := newBubbleNode(t, mn, pbHigh)
				defer stopA()
				b, stopB := newBubbleNode(t, mn, pbLow)
				defer stopB()
				natA := mn.newNAT(netip.MustParseAddr("198.18.3.2"), a.sock)
				natB := mn.newNAT(netip.MustParseAddr("198.18.4.2"), b.sock)
				pubA, pubB := natA.publicAddr(a.sock), natB.publicAddr(b.sock)
				mn.setBlock(between(pubA, pubB))
				a.p.setPeerInfo([]peerInfo{b.info(pubB)})
				b.p.setPeerInfo([]peerInfo{a.info(pubA)})
				time.Sleep(2*slowRoundEvery + 5*time.Second) // fake time
				synctest.Wait()
				if a.path(b.key) != "relay "+b.alloc.relayed.String() || b.path(a.key) != "relay "+a.alloc.relayed.String() {
					t.Fatalf("while blocked: a %s, b %s", a.path(b.key), b.path(a.key))
				}
				// Unblock between two rounds, when neither NAT still maps a
				// socket to the other's public address: the first full ping
				// to arrive finds the other NAT closed.
				until(t, slowRoundEvery+10*time.Second, "both NATs forget the other side", func() bool {
					return mn.natIdle(natA, pubB) && mn.natIdle(natB, pubA)
				})
				ca0, _ := mn.natStats(natA)
				cb0, _ := mn.natStats(natB)

				mn.setBlock(nil)
				a.p.probeAt(b.key, []netip.AddrPort{pubB}, nil, tc.delayA, 10)
				b.p.probeAt(a.key, []netip.AddrPort{pubA}, nil, tc.delayB, 11)
				took := until(t, max(tc.delayA, tc.delayB)+2*time.Second, "both go direct", func() bool {
					return a.path(b.key) == "direct "+pubB.String() && b.path(a.key) == "direct "+pubA.String()
				})
				t.Logf("direct %v after the probe", took)
				sendData(t, a, b)
				sendData(t, b, a)
				ca, _ := mn.natStats(natA)
				cb, _ := mn.natStats(natB)
				if ca != ca0 || cb != cb0 {
					t.Fatalf("mappings clashed after the probe: %d at a's NAT, %d at b's", ca-ca0, cb-cb0)
				}
			})
		})
	}
}
