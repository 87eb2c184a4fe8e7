package coordinator

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/agentnet/agentnet/wire"
)

// Per-source rate limits on the endpoints an attacker can hammer without
// credentials: enrollment (token guessing, name squatting, store churn),
// the admin API (secret guessing) and the console login. Each class keeps
// a token bucket per source address; a request over the limit is refused
// with 429 and CodeRateLimited, a Retry-After header, and is counted and
// logged (rate-limited) like every other refusal. Loopback is not exempt:
// a local proxy or tunnel in front of the coordinator would otherwise make
// every client exempt.

// RateLimit is one token bucket per source: Burst requests at once, then
// PerSecond requests per second.
type RateLimit struct {
	// PerSecond is optional: the sustained rate per source. Default: the
	// class default (see RateLimits).
	PerSecond float64
	// Burst is optional: requests a source may make at once. Default: the
	// class default.
	Burst int
	// Off is optional: no limit for this class. Default false.
	Off bool
}

// RateLimits configures the per-source limits. Zero fields take defaults.
type RateLimits struct {
	// Enroll is optional: POST /v1/enroll. Default 5/s, burst 20.
	Enroll RateLimit
	// Admin is optional: every /v1/admin/ request, checked before the
	// admin secret. Default 20/s, burst 50.
	Admin RateLimit
	// Login is optional: POST /console/login. Default 1/s, burst 5.
	Login RateLimit
	// MaxSources is optional: how many sources each class tracks. When the
	// table is full, buckets idle long enough to be full again are dropped;
	// if none is, new sources share one overflow bucket of the class (so a
	// spray of addresses gets one extra bucket, not one each, and memory
	// stays bounded). Default 10000.
	MaxSources int
}

// Defaults of RateLimits.
var (
	DefaultEnrollLimit = RateLimit{PerSecond: 5, Burst: 20}
	DefaultAdminLimit  = RateLimit{PerSecond: 20, Burst: 50}
	DefaultLoginLimit  = RateLimit{PerSecond: 1, Burst: 5}
)

// DefaultMaxSources is RateLimits.MaxSources's default.
const DefaultMaxSources = 10000

// String formats l as ParseRateLimit reads it: "RATE/BURST" or "off".
func (l RateLimit) String() string {
	if l.Off {
		return "off"
	}
	return strconv.FormatFloat(l.PerSecond, 'g', -1, 64) + "/" + strconv.Itoa(l.Burst)
}

// ParseRateLimit reads "RATE/BURST" (requests per second per source, and
// burst), for example "5/20" or "0.5/3", or "off".
func ParseRateLimit(s string) (RateLimit, error) {
	if strings.EqualFold(strings.TrimSpace(s), "off") {
		return RateLimit{Off: true}, nil
	}
	r, b, ok := strings.Cut(s, "/")
	if !ok {
		return RateLimit{}, fmt.Errorf("rate limit %q is not RATE/BURST (like 5/20) or off", s)
	}
	perSec, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
	if err != nil || perSec <= 0 || math.IsInf(perSec, 0) || math.IsNaN(perSec) {
		return RateLimit{}, fmt.Errorf("rate limit %q: rate %q is not a positive number of requests per second", s, r)
	}
	burst, err := strconv.Atoi(strings.TrimSpace(b))
	if err != nil || burst < 1 {
		return RateLimit{}, fmt.Errorf("rate limit %q: burst %q is not a positive integer", s, b)
	}
	return RateLimit{PerSecond: perSec, Burst: burst}, nil
}

// withDefault fills l's zero fields from def and checks it.
func (l RateLimit) withDefault(name string, def RateLimit) (RateLimit, error) {
	if l.Off {
		return l, nil
	}
	if l.PerSecond == 0 {
		l.PerSecond = def.PerSecond
	}
	if l.Burst == 0 {
		l.Burst = def.Burst
	}
	if l.PerSecond < 0 || math.IsNaN(l.PerSecond) || math.IsInf(l.PerSecond, 0) || l.Burst < 0 {
		return l, fmt.Errorf("coordinator: RateLimits.%s %v/%d: rate and burst must be positive (or set Off)", name, l.PerSecond, l.Burst)
	}
	return l, nil
}

// rateLimiters are the coordinator's per-class limiters.
type rateLimiters struct {
	enroll, admin, login *sourceLimiter // nil: class off
}

func newRateLimiters(cfg RateLimits) (*rateLimiters, error) {
	maxSources := cfg.MaxSources
	if maxSources == 0 {
		maxSources = DefaultMaxSources
	} else if maxSources < 0 {
		return nil, fmt.Errorf("coordinator: RateLimits.MaxSources %d is negative", maxSources)
	}
	rl := &rateLimiters{}
	for _, c := range []struct {
		name   string
		l, def RateLimit
		dst    **sourceLimiter
	}{
		{"Enroll", cfg.Enroll, DefaultEnrollLimit, &rl.enroll},
		{"Admin", cfg.Admin, DefaultAdminLimit, &rl.admin},
		{"Login", cfg.Login, DefaultLoginLimit, &rl.login},
	} {
		l, err := c.l.withDefault(c.name, c.def)
		if err != nil {
			return nil, err
		}
		if !l.Off {
			*c.dst = newSourceLimiter(l, maxSources)
		}
	}
	return rl, nil
}

// sourceLimiter is a bounded table of token buckets keyed by source.
type sourceLimiter struct {
	limit rate.Limit
	burst int
	max   int
	// idle is how long a bucket takes to refill completely; a bucket idle
	// that long is indistinguishable from a new one and may be dropped.
	idle time.Duration

	mu        sync.Mutex // guards the fields below
	sources   map[netip.Prefix]*bucket
	overflow  *rate.Limiter // shared by new sources while the table is full
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time // last request
}

func newSourceLimiter(l RateLimit, maxSources int) *sourceLimiter {
	idle := time.Duration(float64(l.Burst) / l.PerSecond * float64(time.Second))
	return &sourceLimiter{
		limit:    rate.Limit(l.PerSecond),
		burst:    l.Burst,
		max:      maxSources,
		idle:     max(idle, time.Second),
		sources:  make(map[netip.Prefix]*bucket),
		overflow: rate.NewLimiter(rate.Limit(l.PerSecond), l.Burst),
	}
}

// allow takes one token for src at now. When refused it returns how long
// until a token is available.
func (s *sourceLimiter) allow(src netip.Prefix, now time.Time) (bool, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.sources[src]
	if !ok {
		if len(s.sources) >= s.max {
			s.sweep(now)
		}
		if len(s.sources) >= s.max {
			return s.take(s.overflow, now)
		}
		b = &bucket{lim: rate.NewLimiter(s.limit, s.burst)}
		s.sources[src] = b
	}
	b.last = now
	return s.take(b.lim, now)
}

func (s *sourceLimiter) take(lim *rate.Limiter, now time.Time) (bool, time.Duration) {
	if lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - lim.TokensAt(now)
	return false, time.Duration(missing / float64(s.limit) * float64(time.Second))
}

// sweep drops buckets idle long enough to be full again, at most once a
// second (so a spray against a full table costs one pass per second).
func (s *sourceLimiter) sweep(now time.Time) {
	if !s.lastSweep.IsZero() && now.Sub(s.lastSweep) < time.Second && now.Sub(s.lastSweep) >= 0 {
		return
	}
	s.lastSweep = now
	for k, b := range s.sources {
		if now.Sub(b.last) >= s.idle {
			delete(s.sources, k)
		}
	}
}

// size returns how many sources are tracked.
func (s *sourceLimiter) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sources)
}

// sourceOf is the rate-limit key of a request: its IPv4 address, or the
// /64 of its IPv6 address (one host usually holds a whole /64).
func sourceOf(r *http.Request) netip.Prefix { return sourcePrefix(r.RemoteAddr) }

// sourcePrefix is sourceOf for a remote "host:port" (or bare host).
func sourcePrefix(remote string) netip.Prefix {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{} // unknown sources share one bucket
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// retryAfter is the Retry-After value (whole seconds, at least 1) for a
// wait of d.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

// limited wraps an API handler with the per-source limit l (nil: none).
// It runs before the body is read or any credential checked.
func (c *Coordinator) limited(l *sourceLimiter, class string, h handlerFunc) handlerFunc {
	if l == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		if ok, wait := l.allow(sourceOf(r), c.now()); !ok {
			w.Header().Set("Retry-After", retryAfter(wait))
			return refuse(http.StatusTooManyRequests, wire.CodeRateLimited,
				"too many %s requests from %s; retry in %s s", class, sourceOf(r).Addr(), retryAfter(wait))
		}
		return h(w, r)
	}
}
