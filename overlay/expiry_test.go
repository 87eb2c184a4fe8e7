package overlay_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// TestNodeExpiryStopsNode: a node enrolled with a token carrying a node TTL
// is dropped once the coordinator's (injected) clock passes it, hears
// node_expired, and stops with its peers gone.
func TestNodeExpiryStopsNode(t *testing.T) {
	dir := t.TempDir()
	clock := clocktest.New(time.Now())
	log := testnet.Logger(t)
	c, err := coordinator.New(coordinator.Config{DataDir: filepath.Join(dir, "coord"), Listen: "127.0.0.1:0", Now: clock.Now, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	admin := adminclient.New(c.AdminCred())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	short, err := admin.CreateToken(ctx, wire.CreateTokenRequest{NodeTTLSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	long, err := admin.CreateToken(ctx, wire.CreateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	start := func(name, token string) *overlay.Node {
		nd, err := overlay.New(ctx, overlay.Config{StateDir: filepath.Join(dir, name), Token: token, Name: name,
			ListenAddr: testnet.Loopback, EnrollTimeout: 5 * time.Second, Logger: log.With("c", name)})
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { nd.Close() })
		return nd
	}
	a, b := start("alpha", short.Token), start("bravo", long.Token)
	testnet.WaitPeers(t, a, b)
	if exp := a.Self().Expires; exp.IsZero() || exp.Sub(clock.Now()) > time.Minute {
		t.Errorf("alpha's map says expires %v", exp)
	}

	clock.Add(2 * time.Minute) // within the ±5 min request skew
	if _, err := b.WaitMap(ctx, lacksPeer("alpha")); err != nil {
		t.Fatal(err)
	}
	// WaitMap wakes on the refusal too (lifecycle.go): no polling.
	if _, err := a.WaitMap(ctx, func(*wire.Map) bool { return a.Refused() != nil }); err != nil {
		t.Fatalf("alpha never heard its expiry: %v", err)
	}
	r := a.Refused()
	if r == nil || r.Code != wire.CodeNodeExpired || !strings.Contains(r.Error, "--state NEWDIR") {
		t.Fatalf("alpha's refusal = %+v", r)
	}
	if len(a.Map().Peers) != 0 || b.Refused() != nil {
		t.Errorf("after expiry: alpha has %d peers, bravo refused %v", len(a.Map().Peers), b.Refused())
	}
}
