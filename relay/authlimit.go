package relay

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// The failed-authentication limiter. TURN's long-term credential check
// (RFC 8489 §9.2) answers every guess at once, so without a limit one
// source tries thousands of passwords a second. Each source gets a token
// bucket of failures: Burst failures, one more every Refill; a failure
// with the bucket empty puts the source in back-off for Backoff, during
// which even a correct credential is refused (so a guess that happens to
// be right tells the guesser nothing). Sources are IPs; IPv6 sources are
// their /64, which one host can fill with addresses.

// AuthLimit configures the failed-authentication limiter. Zero fields
// take the defaults below.
type AuthLimit struct {
	// Burst is optional: failures a source may make in a row before it
	// is put in back-off. Default 10.
	Burst int
	// Refill is optional: one failure is forgiven every Refill. Default
	// 6 s (10 a minute).
	Refill time.Duration
	// Backoff is optional: how long a source that exceeded its budget is
	// refused. Default 1 minute.
	Backoff time.Duration
	// MaxSources is optional: sources tracked at once (memory bound);
	// when full, an idle source is forgotten, else an arbitrary one.
	// Default 16384.
	MaxSources int
}

type authLimiter struct {
	cfg AuthLimit

	mu  sync.Mutex // guards src
	src map[netip.Addr]*authSource
}

// authSource is one source's bucket: tokens at last, and the end of its
// back-off (zero: none).
type authSource struct {
	tokens float64
	last   time.Time
	until  time.Time
}

func newAuthLimiter(cfg AuthLimit) (*authLimiter, error) {
	if cfg.Burst < 0 || cfg.Refill < 0 || cfg.Backoff < 0 || cfg.MaxSources < 0 {
		return nil, fmt.Errorf("relay: AuthLimit %+v has a negative field", cfg)
	}
	if cfg.Burst == 0 {
		cfg.Burst = 10
	}
	if cfg.Refill == 0 {
		cfg.Refill = 6 * time.Second
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Minute
	}
	if cfg.MaxSources == 0 {
		cfg.MaxSources = 16384
	}
	return &authLimiter{cfg: cfg, src: make(map[netip.Addr]*authSource)}, nil
}

// sourceKey is the unit a limit applies to: the IP, or an IPv6 /64.
func sourceKey(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// refill brings a's tokens up to now.
func (l *authLimiter) refill(a *authSource, now time.Time) {
	if el := now.Sub(a.last); el > 0 {
		a.tokens = min(float64(l.cfg.Burst), a.tokens+float64(el)/float64(l.cfg.Refill))
		a.last = now
	}
}

// blocked reports whether ip is in back-off at now.
func (l *authLimiter) blocked(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.src[sourceKey(ip)]
	return a != nil && now.Before(a.until)
}

// fail charges a failed authentication to ip; it reports whether that put
// the source in back-off.
func (l *authLimiter) fail(ip netip.Addr, now time.Time) bool {
	k := sourceKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.src[k]
	if a == nil {
		if len(l.src) >= l.cfg.MaxSources {
			l.evict(now)
		}
		a = &authSource{tokens: float64(l.cfg.Burst), last: now}
		l.src[k] = a
	}
	l.refill(a, now)
	if now.Before(a.until) {
		return false
	}
	if a.tokens >= 1 {
		a.tokens--
		return false
	}
	a.until = now.Add(l.cfg.Backoff)
	a.tokens = 0
	a.last = a.until // no refill during the back-off
	return true
}

// evict forgets one source: an idle one (full bucket, no back-off) if
// there is one among the first few looked at, else an arbitrary one.
// Called with mu held.
func (l *authLimiter) evict(now time.Time) {
	var victim netip.Addr
	n := 0
	for k, a := range l.src {
		if !victim.IsValid() {
			victim = k
		}
		l.refill(a, now)
		if !now.Before(a.until) && a.tokens >= float64(l.cfg.Burst) {
			victim = k
			break
		}
		if n++; n >= 64 {
			break
		}
	}
	delete(l.src, victim)
}
