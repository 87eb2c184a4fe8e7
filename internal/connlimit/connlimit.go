// Package connlimit caps the inbound connections a listener keeps open at
// once, per source address and in total, so that one peer opening
// thousands of connections cannot exhaust a node's memory or file
// descriptors (issue 17 item 5: 10,000 connections to an --expose port
// cost the node 1.06 GB). It only counts: the caller accepts, asks Acquire,
// and resets what is refused. Acquire never blocks.
package connlimit

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentnet/agentnet/internal/logthrottle"
)

// Defaults for Config.
const (
	// DefaultPerSource is the default cap on connections open at once
	// from one source address. Browsers open 6 per host; busy RPC clients
	// pool a few dozen. 256 leaves room for both and stops a flood early.
	DefaultPerSource = 256
	// DefaultTotal is the default cap on all inbound connections open at
	// once (Linux's default listen backlog, somaxconn, is the same).
	DefaultTotal = 4096
	// LogInterval is how often one (source, reason) refusal is logged.
	LogInterval = 10 * time.Second
)

// Reason says which cap refused a connection; it is the metric label.
type Reason string

// Refusal reasons.
const (
	PerSource Reason = "per_source" // the source has PerSource connections open
	Total     Reason = "total"      // Total connections are open
)

// Config for New. Each field says its default.
type Config struct {
	// PerSource caps connections open at once from one source address.
	// Optional; 0 means DefaultPerSource (256). Negative is refused.
	PerSource int
	// Total caps all connections open at once. Optional; 0 means
	// DefaultTotal (4096). Negative is refused.
	Total int
	// Logger receives one Warn line per (source, reason) per LogInterval.
	// Optional; default discards.
	Logger *slog.Logger
	// Now is the clock of the log rate limit. Optional, default time.Now.
	Now func() time.Time
}

// Stats are a Limiter's counters.
type Stats struct {
	Open             int    // connections admitted and not yet released
	RefusedPerSource uint64 // refused by the per-source cap
	RefusedTotal     uint64 // refused by the total cap
}

// Limiter counts open connections. It is safe for concurrent use.
type Limiter struct {
	perSource, total int
	log              *slog.Logger
	now              func() time.Time
	logs             logthrottle.Limiter

	refusedPerSource, refusedTotal atomic.Uint64

	mu    sync.Mutex // guards the fields below
	open  int
	bySrc map[netip.Addr]int // at most total entries, none zero
}

// New returns a Limiter, or an error naming the offending value.
func New(cfg Config) (*Limiter, error) {
	if cfg.PerSource < 0 {
		return nil, fmt.Errorf("connlimit: per-source cap %d is negative", cfg.PerSource)
	}
	if cfg.Total < 0 {
		return nil, fmt.Errorf("connlimit: total cap %d is negative", cfg.Total)
	}
	l := &Limiter{
		perSource: cfg.PerSource,
		total:     cfg.Total,
		log:       cfg.Logger,
		now:       cfg.Now,
		logs:      logthrottle.Limiter{Interval: LogInterval},
		bySrc:     make(map[netip.Addr]int),
	}
	if l.perSource == 0 {
		l.perSource = DefaultPerSource
	}
	if l.total == 0 {
		l.total = DefaultTotal
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l, nil
}

// Acquire admits one connection from src, or refuses it: it then counts
// and (rate-limited) logs the refusal, and the caller must reset the
// connection. An admitted connection must be released exactly once.
// IPv4-mapped IPv6 sources count as IPv4; zones are ignored.
func (l *Limiter) Acquire(src netip.Addr) (Reason, bool) {
	src = key(src)
	l.mu.Lock()
	var reason Reason
	switch {
	case l.open >= l.total:
		reason = Total
	case l.bySrc[src] >= l.perSource:
		reason = PerSource
	default:
		l.open++
		l.bySrc[src]++
		l.mu.Unlock()
		return "", true
	}
	l.mu.Unlock()
	limit := l.total
	if reason == PerSource {
		l.refusedPerSource.Add(1)
		limit = l.perSource
	} else {
		l.refusedTotal.Add(1)
	}
	if l.logs.Allow(src.String()+"/"+string(reason), l.now()) {
		l.log.Warn("inbound connection refused: cap reached (further refusals counted, logged once per interval)",
			"endpoint", src, "reason", string(reason), "limit", limit)
	}
	return reason, false
}

// Release frees the slot of a connection from src that Acquire admitted.
func (l *Limiter) Release(src netip.Addr) {
	src = key(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.bySrc[src]
	if !ok {
		panic("connlimit: Release without Acquire") // a caller bug, not network input
	}
	if n <= 1 {
		delete(l.bySrc, src)
	} else {
		l.bySrc[src] = n - 1
	}
	l.open--
}

// Stats returns a snapshot of the counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	open := l.open
	l.mu.Unlock()
	return Stats{Open: open, RefusedPerSource: l.refusedPerSource.Load(), RefusedTotal: l.refusedTotal.Load()}
}

func key(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }
