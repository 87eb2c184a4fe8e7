package proxy

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"
)

// relay is what Forward and Expose share: accept on one listener, dial one
// target for each connection, copy both ways. They differ only in which
// side is the overlay (Forward: local listener → overlay dial; Expose:
// overlay listener → local dial).
type relay struct {
	ln      *limitListener
	dial    func(ctx context.Context) (net.Conn, error)
	timeout time.Duration
	log     *slog.Logger
	what    string // for logs: "forward: dial target failed"...

	ctx    context.Context
	cancel context.CancelFunc
	t      tracker
	once   sync.Once
}

// startRelay starts serving ln; the relay owns ln from here on.
func startRelay(ln *limitListener, dial func(ctx context.Context) (net.Conn, error), timeout time.Duration, log *slog.Logger, what string) *relay {
	r := &relay{ln: ln, dial: dial, timeout: timeout, log: log, what: what}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.t.start(func() { serveListener(r.ctx, &r.t, ln, r.log, r.handle) })
	return r
}

// Addr returns the listener's address.
func (r *relay) Addr() net.Addr { return r.ln.Addr() }

// ConnStats returns the counters of accepted connections.
func (r *relay) ConnStats() ConnStats { return connStats(r.ln.lim) }

// Close stops the listener, closes every connection and waits for all
// goroutines.
func (r *relay) Close() error {
	r.once.Do(func() {
		r.cancel()
		r.ln.Close()
	})
	r.t.close()
	return nil
}

func (r *relay) handle(c net.Conn) {
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	out, err := r.dial(ctx)
	cancel()
	if err != nil {
		if r.ctx.Err() == nil {
			r.log.Warn(r.what, "client", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	if !r.t.add(out) {
		out.Close()
		return
	}
	defer r.t.remove(out)
	join(c, out)
}
