package overlay

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
)

// floodInit is a handshake initiation to pub with a valid MAC1 and random
// everything else: what anyone holding pub can send at line rate.
func floodInit(pub []byte) []byte {
	b := make([]byte, wgInitiationSize)
	rand.Read(b)
	binary.LittleEndian.PutUint32(b, wgMsgInitiation)
	mk := blake2s.Sum256(append([]byte(wgLabelMAC1), pub...))
	mac, _ := blake2s.New128(mk[:])
	mac.Write(b[:wgInitMAC1])
	copy(b[wgInitMAC1:], mac.Sum(nil))
	clear(b[wgInitMAC1+16:]) // no MAC2
	return b
}

func TestInitLimiter(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	var l initLimiter
	a := netip.MustParseAddr("192.0.2.1")
	// One source: its own bucket (burst initReadPerSrc) runs out first.
	n := 0
	for range 1000 {
		if l.allow(a, t0) {
			n++
		}
	}
	if n != initReadPerSrc {
		t.Fatalf("one source at one instant: %d reads, want %d", n, initReadPerSrc)
	}
	// After a second it has initReadPerSrc more.
	n = 0
	for range 1000 {
		if l.allow(a, t0.Add(time.Second)) {
			n++
		}
	}
	if n != initReadPerSrc {
		t.Fatalf("one source a second later: %d reads, want %d", n, initReadPerSrc)
	}

	// Many sources (the flood): the global bucket bounds them together.
	var g initLimiter
	n = 0
	for i := range 2000 {
		src := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if g.allow(src, t0) {
			n++
		}
	}
	if n != initReadBurst {
		t.Fatalf("2,000 sources at one instant: %d reads, want the global burst %d", n, initReadBurst)
	}
	// Over ten seconds at any rate: at most burst + rate × 10.
	n = 0
	for i := range 200_000 {
		src := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		if g.allow(src, t0.Add(time.Duration(i)*50*time.Microsecond)) { // 20k/s
			n++
		}
	}
	if max := initReadRate*10 + initReadBurst; n > max || n < initReadRate*9 {
		t.Fatalf("10 s of 20k/s from many sources: %d reads, want about %d (at most %d)", n, initReadRate*10, max)
	}
	if len(g.per) > initReadSources {
		t.Fatalf("%d per-source buckets kept, bound %d", len(g.per), initReadSources)
	}
	// IPv6 sources share a bucket per /64.
	var v6 initLimiter
	n = 0
	for i := range 100 {
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(i)})
		if v6.allow(src, t0) {
			n++
		}
	}
	if n != initReadPerSrc {
		t.Fatalf("100 addresses of one /64: %d reads, want %d", n, initReadPerSrc)
	}
}

// TestScreenInitFlood: 20,000 initiations with a valid MAC1 from 2,000
// spoofed sources within one second, to a bind with a lazy peer not
// configured yet. None is read on the receive path; at most the global
// burst plus a second's rate reach the reader's queue, the rest are
// counted; at most initPassBurst plus a second's initPassRate go on to
// wireguard-go, the rest are dropped and counted. Junk MAC1s are dropped
// and counted.
func TestScreenInitFlood(t *testing.T) {
	priv, _ := ecdh.X25519().GenerateKey(rand.Reader)
	lazy := &lazyWG{activate: func([32]byte) {}}
	if err := lazy.setKey([32]byte(priv.Bytes())); err != nil {
		t.Fatal(err)
	}
	var lazyKey [32]byte
	lazyKey[0] = 9
	lazy.setPeers(map[[32]byte]wgPeer{lazyKey: {key: lazyKey}}, nil)
	p := newPeerBind(peerBindConfig{Socket: &Bind{}, Now: time.Now})
	p.lazy = lazy

	t0 := time.Unix(1e9, 0)
	pkt := floodInit(priv.PublicKey().Bytes())
	passed := 0
	for i := range 20_000 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i % 2000 >> 8), byte(i % 2000)}), 1000)
		if !p.screenInit(pkt, src, t0.Add(time.Duration(i)*50*time.Microsecond)) {
			passed++
		}
	}
	if passed > initPassBurst+initPassRate+1 || passed < initPassRate || uint64(passed)+p.initDropped.Load() != 20_000 {
		t.Fatalf("%d passed on to wireguard-go, %d dropped; want at most %d passed and the rest dropped",
			passed, p.initDropped.Load(), initPassBurst+initPassRate+1)
	}
	queued := uint64(len(p.initQ))
	if queued+p.initQDrops.Load() > initReadBurst+initReadRate+1 {
		t.Fatalf("%d initiations let through to the reader in one second (%d queued), want at most %d",
			queued+p.initQDrops.Load(), queued, initReadBurst+initReadRate+1)
	}
	if got := p.initLimited.Load() + p.initQDrops.Load() + queued; got != 20_000 {
		t.Fatalf("limited %d + dropped %d + queued %d = %d, want 20000", p.initLimited.Load(), p.initQDrops.Load(), queued, got)
	}
	if queued != initReadQueue-initReadKnownSlots {
		t.Fatalf("queue holds %d, want it full up to the slots kept for known sources, %d", queued, initReadQueue-initReadKnownSlots)
	}

	// Every peer configured: nothing to look for, nothing queued or limited.
	lazy.markOn(lazyKey)
	before := p.initLimited.Load()
	for range 100 {
		p.screenInit(pkt, netip.MustParseAddrPort("10.9.9.9:1"), t0.Add(time.Hour))
	}
	if p.initLimited.Load() != before || uint64(len(p.initQ)) != queued {
		t.Fatal("initiations screened although no peer is waiting to be configured")
	}

	bad := append([]byte(nil), pkt...)
	bad[wgInitMAC1] ^= 1
	if !p.screenInit(bad, netip.MustParseAddrPort("10.9.9.9:1"), t0.Add(2*time.Hour)) || p.junkWG.Load() != 1 {
		t.Fatalf("bad MAC1 not dropped and counted: junkWG %d", p.junkWG.Load())
	}
}

// TestScreenInitKnownSource: while a flood from strangers has emptied
// every stranger's bucket and filled the reader's queue up to its kept
// slots, an initiation from a candidate address a map peer published (no
// path yet) still goes on to wireguard-go and, for a peer not configured
// yet, to the reader; within its own source's limit. Explicit times, no
// socket.
func TestScreenInitKnownSource(t *testing.T) {
	priv, _ := ecdh.X25519().GenerateKey(rand.Reader)
	lazy := &lazyWG{activate: func([32]byte) {}}
	if err := lazy.setKey([32]byte(priv.Bytes())); err != nil {
		t.Fatal(err)
	}
	var offKey, onKey [32]byte
	offKey[0], onKey[0] = 1, 2
	offCand := netip.MustParseAddrPort("198.51.100.7:41641")
	onCand := netip.MustParseAddrPort("[2001:db8::7]:41641")
	lazy.setPeers(map[[32]byte]wgPeer{
		offKey: {key: offKey, cands: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.7:41641"), offCand}},
		onKey:  {key: onKey, cands: []netip.AddrPort{onCand}},
	}, map[[32]byte]wgPeer{onKey: {key: onKey}})
	p := newPeerBind(peerBindConfig{Socket: &Bind{}})
	p.lazy = lazy
	pkt := floodInit(priv.PublicKey().Bytes())

	t0 := time.Unix(1e9, 0)
	for i := range 20_000 { // one second at 20k/s from 2,000 sources
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i % 2000 >> 8), byte(i % 2000)}), 1000)
		p.screenInit(pkt, src, t0.Add(time.Duration(i)*50*time.Microsecond))
	}
	t1 := t0.Add(time.Second)
	strangers := len(p.initQ)
	if p.screenInit(pkt, netip.MustParseAddrPort("10.9.9.9:1"), t1) == false && p.initDropped.Load() == 0 {
		t.Fatal("the flood did not empty the strangers' pass bucket: the test proves nothing")
	}

	for _, tc := range []struct {
		name     string
		src      netip.AddrPort
		at       time.Time
		wantPass bool // goes on to wireguard-go
		wantRead bool // queued for the reader
	}{
		{"stranger", netip.MustParseAddrPort("10.9.9.10:1"), t1, false, false},
		{"candidate of a peer not configured", offCand, t1, true, true},
		{"same address, another port", netip.AddrPortFrom(offCand.Addr(), 5), t1, false, false},
		{"IPv4-mapped form", netip.AddrPortFrom(netip.AddrFrom16(offCand.Addr().As16()), 41641), t1, true, true},
		{"candidate of a configured peer", onCand, t1, true, false},
	} {
		before := len(p.initQ)
		pass := !p.screenInit(pkt, tc.src, tc.at)
		read := len(p.initQ) == before+1
		if pass != tc.wantPass || read != tc.wantRead {
			t.Errorf("%s (%v): passed %v, read %v; want %v, %v", tc.name, tc.src, pass, read, tc.wantPass, tc.wantRead)
		}
	}
	if got := len(p.initQ) - strangers; got != 2 {
		t.Fatalf("%d known initiations queued, want 2", got)
	}

	// Its own candidate's limit still holds: at one instant,
	// initReadPerSrc in all (two taken above).
	read := 0
	for range 100 {
		before := len(p.initQ)
		p.screenInit(pkt, offCand, t1)
		if len(p.initQ) == before+1 {
			read++
		}
		if len(p.initQ) == cap(p.initQ) {
			<-p.initQ
		}
	}
	if read != initReadPerSrc-2 {
		t.Fatalf("one known source at one instant: %d more read, want %d", read, initReadPerSrc-2)
	}
}

// TestInitLimiterKnown: allowKnown spends only its candidate's bucket;
// neither the global bucket nor the address's, emptied by strangers, is
// consulted. Explicit times.
func TestInitLimiterKnown(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	src := netip.MustParseAddrPort("198.51.100.7:41641")
	for _, tc := range []struct {
		name        string
		emptyGlobal bool          // strangers (src's address among them) emptied the global bucket at t0
		spent       int           // reads src already had at t0
		stranger    bool          // ask allow, not allowKnown
		at          time.Duration // after t0
		want        int           // of 100 tries at that instant
	}{
		{"known, fresh", false, 0, false, 0, initReadPerSrc},
		{"known, global empty", true, 0, false, 0, initReadPerSrc},
		{"known, own bucket spent", true, initReadPerSrc, false, 0, 0},
		{"known, own bucket half refilled", true, initReadPerSrc, false, 500 * time.Millisecond, initReadPerSrc / 2},
		{"stranger path, global empty", true, 0, true, 0, 0},
		{"stranger path, global refilled", true, 0, true, time.Second, initReadPerSrc},
	} {
		var l initLimiter
		if tc.emptyGlobal {
			for i := range 5000 {
				l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), t0)
				l.allow(src.Addr(), t0) // other ports of a shared address
			}
		}
		for range tc.spent {
			if !l.allowKnown(src, t0) {
				t.Fatalf("%s: setup: read refused", tc.name)
			}
		}
		ok := 0
		for range 100 {
			allowed := false
			if tc.stranger {
				allowed = l.allow(src.Addr(), t0.Add(tc.at))
			} else {
				allowed = l.allowKnown(src, t0.Add(tc.at))
			}
			if allowed {
				ok++
			}
		}
		if ok != tc.want {
			t.Errorf("%s: %d allowed, want %d", tc.name, ok, tc.want)
		}
	}
}

// BenchmarkInitFlood is the receive path's cost per flooding initiation
// (valid MAC1, unknown source, a lazy peer waiting): screenInit, against
// reading every one as the bind did before (X25519 + AEAD).
func BenchmarkInitFlood(b *testing.B) {
	priv, _ := ecdh.X25519().GenerateKey(rand.Reader)
	lazy := &lazyWG{activate: func([32]byte) {}}
	lazy.setKey([32]byte(priv.Bytes()))
	var lazyKey [32]byte
	lazyKey[0] = 9
	lazy.setPeers(map[[32]byte]wgPeer{lazyKey: {key: lazyKey}}, nil)
	pkt := floodInit(priv.PublicKey().Bytes())
	b.Run("screened", func(b *testing.B) {
		p := newPeerBind(peerBindConfig{Socket: &Bind{}})
		p.lazy = lazy
		t0 := time.Unix(1e9, 0)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1000)
			p.screenInit(pkt, src, t0.Add(time.Duration(i)*50*time.Microsecond))
			if len(p.initQ) == cap(p.initQ) {
				<-p.initQ
			}
		}
	})
	b.Run("read-every-one", func(b *testing.B) {
		for b.Loop() {
			lazy.initiator(pkt)
		}
	})
}

// TestStrangersSpent: the receive path's shortcut drops a stranger's
// initiation before MAC1 only when neither the pass bucket nor (when some
// peer waits to be configured) the global read bucket holds a token; it
// takes none itself. Explicit times.
func TestStrangersSpent(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	spendPass := func(l *initLimiter, at time.Time) {
		for l.allowPass(at) {
		}
	}
	spendRead := func(l *initLimiter, at time.Time) {
		for i := range 5000 {
			l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), at)
		}
	}
	for _, tc := range []struct {
		name       string
		pass, read bool // spend that bucket at t0
		reading    bool
		at         time.Duration
		want       bool
	}{
		{"fresh", false, false, true, 0, false},
		{"pass spent, not reading", true, false, false, 0, true},
		{"pass spent, reading, read bucket full", true, false, true, 0, false},
		{"both spent, reading", true, true, true, 0, true},
		{"both spent, one pass token later", true, true, true, time.Second / initPassRate, false},
		{"read spent only, not reading", false, true, false, 0, false},
	} {
		var l initLimiter
		if tc.pass {
			spendPass(&l, t0)
		}
		if tc.read {
			spendRead(&l, t0)
		}
		for range 3 { // takes no token: the same answer each time
			if got := l.strangersSpent(t0.Add(tc.at), tc.reading); got != tc.want {
				t.Fatalf("%s: strangersSpent = %v, want %v", tc.name, got, tc.want)
			}
		}
	}
}
