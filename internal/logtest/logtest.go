// Package logtest is the log sink the tests share: a buffer that many
// goroutines may write to (a slog handler's output) while the test reads it.
package logtest

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// Buffer is an io.Writer safe for concurrent writers and readers. The zero
// value is ready to use.
type Buffer struct {
	mu   sync.Mutex // guards the fields below
	b    bytes.Buffer
	wake chan struct{} // closed by the next Write; nil until a Wait
}

// Write appends p and wakes every Wait.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Wait blocks until ok holds for everything written so far (checked at
// once, then after every Write) or ctx ends, and returns ctx's error then.
// It is how a test waits for a log line or output instead of polling.
func (l *Buffer) Wait(ctx context.Context, ok func(written string) bool) error {
	for {
		// Take the text and the wake channel of the next Write together,
		// so that no Write falls between the check and the wait.
		l.mu.Lock()
		written := l.b.String()
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		wake := l.wake
		l.mu.Unlock()
		if ok(written) {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Logger returns a Debug-level text logger writing to a new Buffer.
func Logger() (*slog.Logger, *Buffer) {
	b := &Buffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}
