package overlay

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// The handshake guard's tests give it inputs and a time and check what it
// returns; no socket, no clock.

var guardT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func somePath(port uint16) *path {
	return directPath(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port), true)
}

func TestGuardInitiation(t *testing.T) {
	pa := somePath(1)
	for _, tc := range []struct {
		name               string
		path               *path
		hold               bool
		wantSend, wantHave bool
	}{
		{"path known: sent", pa, false, true, true},
		{"no path: parked", nil, false, false, false},
		{"key rotation: held", pa, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newHandshakeGuard(pbHigh)
			g.hold = tc.hold
			pkt := pbPacket(wgMsgInitiation, 1)
			got, have := g.initiation(pbLow, pkt, func() *path { return tc.path }, guardT0)
			if (got != nil) != tc.wantSend || have != tc.wantHave {
				t.Fatalf("initiation: path %v have %v, want send %v have %v", got, have, tc.wantSend, tc.wantHave)
			}
			gp := g.peers[pbLow]
			if parked := gp.parked != nil; parked == tc.wantSend {
				t.Fatalf("parked %v, want %v", parked, !tc.wantSend)
			}
			if !gp.initSent.Equal(guardT0) {
				t.Fatalf("initSent %v: a parked or sent initiation counts for the tie-break from now", gp.initSent)
			}
			if tc.wantSend && !bytes.Equal(gp.lastInit, pkt) {
				t.Fatal("a sent initiation is kept until answered")
			}
		})
	}
}

func TestGuardTieBreak(t *testing.T) {
	for _, tc := range []struct {
		name     string
		self     [32]byte
		ours     bool          // we sent an initiation
		age      time.Duration // how long ago
		typ      uint32
		wantDrop bool
	}{
		{"winner drops initiation", pbHigh, true, time.Second, wgMsgInitiation, true},
		{"winner after REKEY_TIMEOUT keeps it", pbHigh, true, wgRekeyTimeout, wgMsgInitiation, false},
		{"winner without own initiation", pbHigh, false, 0, wgMsgInitiation, false},
		{"loser keeps initiation", pbLow, true, time.Second, wgMsgInitiation, false},
		{"winner keeps response", pbHigh, true, time.Second, wgMsgResponse, false},
		{"winner keeps data", pbHigh, true, time.Second, wgMsgData, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newHandshakeGuard(tc.self)
			peer := pbLow
			if tc.self == pbLow {
				peer = pbHigh
			}
			if tc.ours {
				g.initiation(peer, pbPacket(wgMsgInitiation, 1), func() *path { return somePath(1) }, guardT0)
			}
			now := guardT0.Add(tc.age)
			if got := g.received(peer, tc.typ, now); got != tc.wantDrop {
				t.Fatalf("received: drop %v, want %v", got, tc.wantDrop)
			}
			if tc.typ == wgMsgInitiation {
				if got := g.loses(peer, now); got != tc.wantDrop {
					t.Fatalf("loses (redelivery): %v, want %v", got, tc.wantDrop)
				}
			}
		})
	}
}

func TestGuardFlush(t *testing.T) {
	pa := somePath(7)
	stranger := netip.MustParseAddrPort("198.51.100.9:4000")
	other := netip.MustParseAddrPort("198.51.100.10:4000")
	for _, tc := range []struct {
		name      string
		parkAge   time.Duration // our initiation parked this long ago
		path      *path         // the peer's path at flush
		hold      bool
		strangeAt time.Duration // the stranger's initiation arrived this long ago
		peerAddr  netip.AddrPort
		wantSend  bool
		wantRedel bool
		wantKept  bool // still parked after flush
	}{
		{"parked goes out with the path", 0, pa, false, 0, stranger, true, true, false},
		{"stale parked is dropped", wgRekeyTimeout, pa, false, wgRekeyTimeout, stranger, false, false, false},
		{"no path yet: stays parked", 0, nil, false, 0, other, false, false, true},
		{"held during key rotation", 0, pa, true, 0, other, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newHandshakeGuard(pbLow)
			init := pbPacket(wgMsgInitiation, 1)
			theirs := pbPacket(wgMsgInitiation, 2)
			g.initiation(pbHigh, init, func() *path { return nil }, guardT0)
			g.remember(stranger, theirs, guardT0)
			g.hold = tc.hold
			now := guardT0.Add(max(tc.parkAge, tc.strangeAt))
			peerAt := func(ap netip.AddrPort) ([32]byte, bool) { return pbHigh, ap == tc.peerAddr }
			sends, redel := g.flush(now, peerAt, func([32]byte) *path { return tc.path })
			if got := len(sends) == 1 && bytes.Equal(sends[0].pkt, init) && sends[0].pa == pa && sends[0].key == pbHigh; got != tc.wantSend || len(sends) > 1 {
				t.Fatalf("sends %+v, want our initiation sent: %v", sends, tc.wantSend)
			}
			if got := len(redel) == 1 && bytes.Equal(redel[0].pkt, theirs) && redel[0].key == pbHigh; got != tc.wantRedel || len(redel) > 1 {
				t.Fatalf("redeliver %+v, want theirs: %v", redel, tc.wantRedel)
			}
			if kept := g.peers[pbHigh].parked != nil; kept != tc.wantKept {
				t.Fatalf("still parked %v, want %v", kept, tc.wantKept)
			}
			if _, left := g.strangers[stranger]; left != (tc.peerAddr != stranger) {
				t.Fatalf("stranger left %v: a stranger is forgotten once its address is a peer's", left)
			}
			if tc.wantSend && !g.peers[pbHigh].initSent.Equal(now) {
				t.Fatal("a flushed initiation counts as sent now")
			}
			sends, redel = g.flush(now, peerAt, func([32]byte) *path { return tc.path })
			if len(sends)+len(redel) != 0 && !tc.wantKept {
				t.Fatalf("second flush sent again: %d sends, %d redeliveries", len(sends), len(redel))
			}
		})
	}
}

// TestGuardPathMoved: our unanswered initiation, and our response until the
// peer's data shows it arrived, go out again when the path moves.
func TestGuardPathMoved(t *testing.T) {
	pa := somePath(1)
	for _, tc := range []struct {
		name       string
		sendInit   bool
		sendResp   bool
		answered   uint32 // message type received from the peer since; 0: none
		age        time.Duration
		wantResend [][]byte
	}{
		{"unanswered initiation", true, false, 0, time.Second, [][]byte{pbPacket(wgMsgInitiation, 1)}},
		{"answered initiation", true, false, wgMsgResponse, time.Second, nil},
		{"initiation older than REKEY_TIMEOUT", true, false, 0, wgRekeyTimeout, nil},
		{"response not yet confirmed", false, true, 0, time.Second, [][]byte{pbPacket(wgMsgResponse, 2)}},
		{"response confirmed by data", false, true, wgMsgData, time.Second, nil},
		{"nothing sent", false, false, 0, time.Second, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newHandshakeGuard(pbLow)
			if tc.sendInit {
				g.initiation(pbHigh, pbPacket(wgMsgInitiation, 1), func() *path { return pa }, guardT0)
			}
			if tc.sendResp {
				g.response(pbHigh, pbPacket(wgMsgResponse, 2), guardT0)
			}
			if tc.answered != 0 {
				g.received(pbHigh, tc.answered, guardT0)
			}
			now := guardT0.Add(tc.age)
			if got := g.pathMoved(pbHigh, now); got != (tc.wantResend != nil) {
				t.Fatalf("pathMoved: flush %v, want %v", got, tc.wantResend != nil)
			}
			sends, _ := g.flush(now, func(netip.AddrPort) ([32]byte, bool) { return [32]byte{}, false }, func([32]byte) *path { return pa })
			var got [][]byte
			for _, s := range sends {
				got = append(got, s.pkt)
			}
			if len(got) != len(tc.wantResend) || len(got) == 1 && !bytes.Equal(got[0], tc.wantResend[0]) {
				t.Fatalf("resent %d messages, want %d", len(got), len(tc.wantResend))
			}
		})
	}
}

func TestGuardPathArrived(t *testing.T) {
	g := newHandshakeGuard(pbLow)
	if g.pathArrived(pbHigh) {
		t.Fatal("nothing parked, yet a flush was wanted")
	}
	g.initiation(pbHigh, pbPacket(wgMsgInitiation, 1), func() *path { return nil }, guardT0)
	if !g.pathArrived(pbHigh) {
		t.Fatal("a parked initiation must ask for a flush when the path arrives")
	}
}

func TestGuardStrangersBounded(t *testing.T) {
	g := newHandshakeGuard(pbHigh)
	var last netip.AddrPort
	for i := range maxStrangers + 36 {
		last = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(1000+i))
		g.remember(last, pbPacket(wgMsgInitiation, byte(i)), guardT0.Add(time.Duration(i)*time.Millisecond))
	}
	g.remember(last, pbPacket(wgMsgInitiation, 0xaa), guardT0.Add(time.Hour)) // replaces, evicts nothing
	first := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), 1000+36)
	st := g.strangers[last]
	if len(g.strangers) != maxStrangers || len(st.pkt) != 148 || st.pkt[4] != 0xaa {
		t.Fatalf("%d strangers (want %d), latest %x", len(g.strangers), maxStrangers, st.pkt[:min(5, len(st.pkt))])
	}
	if _, ok := g.strangers[first]; !ok {
		t.Fatal("the oldest were not the ones evicted")
	}
}

func TestGuardRekey(t *testing.T) {
	g := newHandshakeGuard(pbHigh)
	g.initiation(pbLow, pbPacket(wgMsgInitiation, 1), func() *path { return somePath(1) }, guardT0)
	g.beginRekey(pbLow) // our new key is smaller than ...
	if g.loses(pbLow, guardT0) {
		t.Fatal("initiations sent under the old key still count for the tie-break")
	}
	if pa, have := g.initiation(pbLow, pbPacket(wgMsgInitiation, 2), func() *path { return somePath(1) }, guardT0); pa != nil || !have {
		t.Fatal("an initiation during key rotation was not held")
	}
	g.endRekey(false)
	if gp := g.peers[pbLow]; gp.parked != nil || !gp.initSent.IsZero() {
		t.Fatal("endRekey(false) kept initiations made with the discarded key")
	}
	g.beginRekey(pbHigh)
	g.initiation(pbLow, pbPacket(wgMsgInitiation, 3), func() *path { return somePath(1) }, guardT0)
	g.endRekey(true)
	sends, _ := g.flush(guardT0, func(netip.AddrPort) ([32]byte, bool) { return [32]byte{}, false }, func([32]byte) *path { return somePath(1) })
	if len(sends) != 1 || sends[0].pkt[4] != 3 || !g.loses(pbLow, guardT0) {
		t.Fatalf("endRekey(true): %d sends; the held initiation goes out and wins", len(sends))
	}
}
