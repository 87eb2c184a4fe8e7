// Package logthrottle lets one log line per key through per interval, so a
// client hammering a server cannot flood its log. Callers count what they
// refuse regardless.
package logthrottle

import (
	"sync"
	"time"
)

// maxKeys bounds a Limiter's memory; when full it starts over.
const maxKeys = 4096

// Limiter is safe for concurrent use. The zero value with Interval set is
// ready.
type Limiter struct {
	Interval time.Duration

	mu   sync.Mutex // guards last
	last map[string]time.Time
}

// Allow reports whether a line for key may be logged at now.
func (l *Limiter) Allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.Interval && now.Sub(t) >= 0 {
		return false
	}
	if l.last == nil || len(l.last) >= maxKeys {
		l.last = make(map[string]time.Time)
	}
	l.last[key] = now
	return true
}
