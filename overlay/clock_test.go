package overlay_test

import (
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/internal/testnet"
)

// TestNodeClock: the node reads time through Config.Now. A map's age in
// Status moves with the injected clock, not with the wall clock.
func TestNodeClock(t *testing.T) {
	net2 := testnet.New(t)
	clock := clocktest.New(time.Now())
	cfg := net2.NodeConfig("alpha")
	cfg.Now = clock.Now
	a, b := net2.StartNodeConfig(cfg), net2.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	net2.StopCoordinator() // no map (and no new map time) from here on
	if age := a.Status().MapAge; age != 0 {
		t.Fatalf("map age %v s on a clock that has not moved, want 0", age)
	}
	clock.Add(90 * time.Second)
	if age := a.Status().MapAge; age != 90 {
		t.Errorf("map age %v s after the clock moved 90 s, want 90", age)
	}
}
