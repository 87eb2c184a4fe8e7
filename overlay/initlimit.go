package overlay

import (
	"crypto/subtle"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
)

// Bounding the work an unauthenticated packet can cost (issue 17 item 4).
//
// An initiation from a source no peer path names may be a lazy peer's
// (lazywg.go) whose key only the Noise IK responder steps reveal: one
// X25519 and one AEAD open (initiation.go). Anyone holding our public key
// (every peer does) can make initiations that pass MAC1, so that work must
// not be done per packet: at 20k packets a second it took the receive
// goroutine whole, and data of established sessions, which shares it,
// stopped. So, on the receive goroutine, only cheap checks run — size,
// type, MAC1 (one BLAKE2s), "is any map peer still unconfigured?" — and
// then two token buckets (global, per source address); a packet that
// passes is copied to a bounded queue (initQ) that the node's activator
// reads, and over the queue's bound it is dropped and counted. The data
// path never waits on either.
//
// The initiation itself goes on to wireguard-go as before — for a
// configured peer (roaming) that is the only delivery — but no more than
// initPassRate a second from sources no path names: each costs it an
// X25519, and past its queue's 1/8 wireguard-go's own defence starts
// (cookie replies demanding MAC2, then a per-IP rate limit; WireGuard
// paper §5.3), which is sound but costs every new peer a 5 s retry.
// Initiations from peers' known paths are not limited here and go on at
// once; under a flood wireguard-go's cookie mechanism still covers them.
//
// A source that is a candidate some map peer published (address and
// port, from the map) is no stranger even before a path names it: a new
// peer's first initiation comes from there while its path is still being
// probed. It skips the pass limit and the global read bucket (its own
// candidate's bucket still holds), and the last initReadKnownSlots of
// initQ are kept for it, so a flood from elsewhere that spends the
// strangers' buckets does not cost the new peer wireguard-go's 5 s retry.
//
// While the strangers' buckets are spent (strangersSpent), a stranger's
// initiation is dropped before even MAC1 is computed: the flood then costs
// the receive path ~0.1 µs a packet, and junk never spends a token.

// mac1OK reports whether msg, an initiation of the right size, carries a
// valid MAC1 for r's key (WireGuard paper §5.4.4): junk is dropped before
// any further work. Constant time.
func (r *initReader) mac1OK(msg []byte) bool {
	if r == nil || len(msg) != wgInitiationSize {
		return false
	}
	mac, _ := blake2s.New128(r.mac1Key[:])
	mac.Write(msg[:wgInitMAC1])
	var sum [16]byte
	return subtle.ConstantTimeCompare(mac.Sum(sum[:0]), msg[wgInitMAC1:wgInitMAC1+16]) == 1
}

// tokenBucket holds up to burst tokens, refilled at rate a second.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) take(now time.Time, rate, burst float64) bool {
	if !b.has(now, rate, burst) {
		return false
	}
	b.tokens--
	return true
}

// has refills the bucket to now and reports whether it holds a token,
// taking none.
func (b *tokenBucket) has(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
	}
	b.last = now
	return b.tokens >= 1
}

// initLimiter bounds the initiations read for their sender's key: a
// global bucket and one per source address; map peers' candidate
// addresses skip the global one (allowKnown). Safe for concurrent use; mu is a leaf.
type initLimiter struct {
	mu     sync.Mutex
	global tokenBucket
	per    map[netip.Addr]*tokenBucket
	known  map[netip.AddrPort]*tokenBucket // by map peers' candidates (allowKnown)
	pass   tokenBucket                     // initiations passed on to wireguard-go
}

// strangersSpent reports whether a stranger's initiation would be neither
// passed on to wireguard-go nor (reading: some map peer is not configured)
// read now: the shared buckets are empty. It takes no token, so the
// receive path can drop a flood before computing MAC1 and junk never
// spends a token.
func (l *initLimiter) strangersSpent(now time.Time, reading bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pass.has(now, initPassRate, initPassBurst) {
		return false
	}
	return !reading || !l.global.has(now, initReadRate, initReadBurst)
}

// allowPass reports whether a stranger's initiation may go on to
// wireguard-go now.
func (l *initLimiter) allowPass(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pass.take(now, initPassRate, initPassBurst)
}

// allow reports whether a stranger's initiation from src may be read
// now. The per-source bucket is checked first so one source cannot drain
// the global one.
func (l *initLimiter) allow(src netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.source(src).take(now, initReadPerSrc, initReadPerSrc) {
		return false
	}
	return l.global.take(now, initReadRate, initReadBurst)
}

// allowKnown reports whether an initiation from src, a candidate of a map
// peer not configured yet, may be read now: that candidate's bucket only
// (not its address's, which strangers on other ports of a shared address
// may have spent), so strangers emptying the global one do not hold it up.
func (l *initLimiter) allowKnown(src netip.AddrPort, now time.Time) bool {
	src = unmapAP(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.known[src]
	if b == nil {
		if l.known == nil || len(l.known) >= initReadSources {
			l.known = make(map[netip.AddrPort]*tokenBucket) // bounded
		}
		b = &tokenBucket{}
		l.known[src] = b
	}
	return b.take(now, initReadPerSrc, initReadPerSrc)
}

// source returns src's bucket (IPv6 sources by /64, what one host is
// likely to hold), made on first use. Called with mu held.
func (l *initLimiter) source(src netip.Addr) *tokenBucket {
	src = src.Unmap()
	if src.Is6() {
		src = netip.PrefixFrom(src, 64).Masked().Addr()
	}
	b := l.per[src]
	if b == nil {
		if l.per == nil || len(l.per) >= initReadSources {
			l.per = make(map[netip.Addr]*tokenBucket) // bounded; the global bucket still holds
		}
		b = &tokenBucket{}
		l.per[src] = b
	}
	return b
}
