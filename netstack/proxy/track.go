package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// tracker owns a front-end's goroutines and connections so Close can
// close every connection and wait for every goroutine.
//
// mu guards the fields below. wg.Add happens only under mu while !closed,
// so it never races with the wg.Wait in close.
type tracker struct {
	mu     sync.Mutex
	closed bool
	conns  map[io.Closer]struct{}
	wg     sync.WaitGroup
}

// add registers c to be closed by close. It reports false (and the caller
// must close c itself) if the tracker is already closed.
func (t *tracker) add(c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[io.Closer]struct{})
	}
	t.conns[c] = struct{}{}
	return true
}

// remove forgets c (it does not close it).
func (t *tracker) remove(c io.Closer) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// enter counts the caller as a running goroutine; leave must follow. It
// reports false if the tracker is closed.
func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) leave() { t.wg.Done() }

// start runs f in a goroutine owned by the tracker; false if closed.
func (t *tracker) start(f func()) bool {
	if !t.enter() {
		return false
	}
	go func() {
		defer t.leave()
		f()
	}()
	return true
}

// close closes every tracked connection, refuses new ones, and waits for
// every goroutine. Idempotent.
func (t *tracker) close() {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	t.wg.Wait()
}

// trackedConn removes itself from its tracker when closed.
type trackedConn struct {
	net.Conn
	t    *tracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.t.remove(c) })
	return c.Conn.Close()
}

// serveListener accepts on ln until it is closed, running handle for each
// connection in a tracked goroutine. handle owns c; c is tracked (closed by
// tracker.close) and untracked and closed when handle returns.
func serveListener(ctx context.Context, t *tracker, ln net.Listener, log *slog.Logger, handle func(c net.Conn)) {
	backoff := acceptBackoffMin
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// Transient (EMFILE and friends): back off instead of spinning.
			log.Warn("accept failed", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, acceptBackoffMax)
			continue
		}
		backoff = acceptBackoffMin
		if !t.add(c) {
			c.Close()
			return
		}
		if !t.start(func() {
			defer c.Close()
			defer t.remove(c)
			handle(c)
		}) {
			c.Close()
			return
		}
	}
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
