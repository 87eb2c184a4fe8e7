package turnclient

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentnet/agentnet/relay"
	"github.com/agentnet/agentnet/wire"
)

// TestRelayRestartDetected: a relay stopped and started again on the same
// port (same data directory, so the same secret) has forgotten the
// allocation; the client notices within 5 s and allocates again (issue 17
// item 10: nodes noticed only at the next refresh, 284 s later).
func TestRelayRestartDetected(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay")
	start := func(listen string) *relay.Server {
		t.Helper()
		s, err := relay.New(context.Background(), relay.Config{Name: "fixture", Listen: listen, DataDir: dir,
			AllowLoopback: true, BandwidthPerUser: -1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start("127.0.0.1:0")
	listen := s.Addrs()[0].Addr.String()
	r := s.Cred().Relay("node", time.Hour, time.Now())
	alloc := func() *Allocation {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, err := Allocate(ctx, Config{Relay: r, Transport: wire.TransportUDP, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := alloc()
	defer a.Close()
	peer := loopbackUDP(t)
	if err := a.Permit(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	// A quiet, healthy allocation is not declared dead.
	select {
	case <-a.Dead():
		t.Fatal("a healthy allocation was declared dead")
	case <-time.After(2*DefaultProbeInterval + DefaultProbeTimeout):
	}

	s.Close()
	stopped := time.Now()
	s = start(listen)
	defer s.Close()
	select {
	case <-a.Dead():
	case <-time.After(5*time.Second - time.Since(stopped)):
		t.Fatalf("dead allocation not noticed within 5 s of the relay's restart")
	}
	a.Close()
	b := alloc()
	defer b.Close()
	t.Logf("allocated again %v after the restart", time.Since(stopped).Round(time.Millisecond))
	if time.Since(stopped) > 5*time.Second {
		t.Fatalf("allocated again only after %v", time.Since(stopped))
	}
	// The new allocation relays.
	if _, err := peer.WriteToUDPAddrPort([]byte("x"), b.RelayedAddr()); err != nil {
		t.Fatal(err)
	}
	if err := b.Permit(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 100)
		_, _, err := b.ReadFrom(buf)
		got <- err
	}()
	deadline := time.After(5 * time.Second)
	for {
		if _, err := peer.WriteToUDPAddrPort([]byte("hello"), b.RelayedAddr()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
			return
		case <-deadline:
			t.Fatal("nothing relayed on the new allocation")
		case <-time.After(100 * time.Millisecond):
		}
	}
}
