package overlay_test

import (
	"context"
	"testing"
	"time"
)

// TestRotateKeyWaitsForMapApplication: RotateKey reconfigures keepalives
// (they depend on our key) only once no map application is in progress
// (lock order rotMu, mapMu, mu); otherwise an application between its
// diff and its IpcSet could put back keepalives computed for the old key.
// The rotation's new key reaches the coordinator and the peer, but this
// node switches its own view of its key only after the map lock is free.
func TestRotateKeyWaitsForMapApplication(t *testing.T) {
	_, a, b, _ := twoNodes(t)
	oldKey := a.Status().WGKey
	oldWire := b.Map().Peers[0].WGKey

	release := a.HoldMapForTest()
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _, err := a.RotateKey(ctx)
		done <- err
	}()
	deadline := time.Now().Add(15 * time.Second)
	for b.Map().Peers[0].WGKey == oldWire {
		if time.Now().After(deadline) {
			t.Fatal("bravo never learnt alpha's new key")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // time for RotateKey to run on if it did not wait
	if got := a.Status().WGKey; got != oldKey {
		t.Fatalf("RotateKey switched keepalives and key (%s → %s) while a map application held the map lock", oldKey, got)
	}
	select {
	case err := <-done:
		t.Fatalf("RotateKey returned (%v) while the map lock was held", err)
	default:
	}
	release()
	held = false
	if err := <-done; err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if got := a.Status().WGKey; got == oldKey {
		t.Fatal("key unchanged after the rotation")
	}
}
