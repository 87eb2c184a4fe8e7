package logthrottle

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := Limiter{Interval: time.Second}
	now := time.Unix(100, 0)
	if !l.Allow("k", now) || l.Allow("k", now.Add(500*time.Millisecond)) || !l.Allow("other", now) || !l.Allow("k", now.Add(2*time.Second)) {
		t.Fatal("limiter does not allow one line per key per interval")
	}
}
