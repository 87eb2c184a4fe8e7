package logtest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestBufferWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b Buffer
		has := func(s string) func(string) bool { return func(w string) bool { return strings.Contains(w, s) } }
		done := make(chan error, 1)
		go func() { done <- b.Wait(context.Background(), has("second")) }()
		b.Write([]byte("first\n"))
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Wait returned before its line was written: %v", err)
		default:
		}
		b.Write([]byte("second\n"))
		if err := <-done; err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if err := b.Wait(context.Background(), has("first")); err != nil {
			t.Fatalf("Wait for a line already written: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := b.Wait(ctx, has("never")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait past its context: %v", err)
		}
	})
}
