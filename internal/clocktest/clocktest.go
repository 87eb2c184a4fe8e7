// Package clocktest is the one settable clock the tests share. Production
// code takes its clock as a `Now func() time.Time` field in its Config
// (default time.Now); a test passes (*Clock).Now and moves time with Add.
//
// For code whose timers cannot be injected (wireguard-go, gVisor, net
// deadlines), prefer testing/synctest: inside a bubble time.Now and every
// timer run on a fake clock that advances when all goroutines block.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a settable clock, safe for concurrent use. The zero value reads
// the zero time; New starts it somewhere sensible.
type Clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

// New returns a clock reading start.
func New(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the clock's time; pass it as a Config's Now.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d (which may be negative, to test clocks that step
// back).
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
