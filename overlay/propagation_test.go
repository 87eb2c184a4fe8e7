package overlay_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// TestRevocationPropagation starts 50 real nodes (netstack, wireguard-go,
// one real coordinator, loopback) and revokes 10 of them one after the
// other, measuring from the admin call to the moment the last remaining
// peer has applied a map without the revoked node (Node.WaitMap returns
// after applyMap has reconfigured WireGuard and DNS). It logs p50/p99 and
// asserts that every revocation propagated. Under -race it uses 16 nodes;
// AGENTNET_PROPAGATION_NODES overrides the node count.
func TestRevocationPropagation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 50 nodes; skipped with -short")
	}
	nodes, revokes := 50, 10
	if raceEnabled {
		nodes = 16 // 50 nodes take minutes under the race detector; the figures come from a plain run
	}
	if v, err := strconv.Atoi(os.Getenv("AGENTNET_PROPAGATION_NODES")); err == nil && v > 2 {
		nodes, revokes = v, min(10, v-2)
	}
	nw := testnet.New(t)
	all := make([]*overlay.Node, nodes)
	start := time.Now()
	for i := range all {
		cfg := nw.NodeConfig(fmt.Sprintf("n%02d", i))
		cfg.KeyRotation = -1
		all[i] = nw.StartNodeConfig(cfg)
	}
	testnet.WaitPeersWithin(t, 60*time.Second, all...)
	t.Logf("%d nodes up and meshed in %v", nodes, time.Since(start))

	admin := adminclient.New(nw.Coord.AdminCred())
	var lasts, each []time.Duration
	for r := range revokes {
		victim := all[r].Self().Name
		rest := all[r+1:]
		var mu sync.Mutex
		var applied []time.Time
		var wg sync.WaitGroup
		ctx := ctxT(t, 30*time.Second)
		for _, nd := range rest {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := nd.WaitMap(ctx, lacksPeer(victim)); err != nil {
					t.Errorf("%s still lists %s: %v", nd.Self().Name, victim, err)
					return
				}
				now := time.Now()
				mu.Lock()
				applied = append(applied, now)
				mu.Unlock()
			}()
		}
		t0 := time.Now()
		if _, err := admin.RevokeNode(ctx, victim, "propagation test"); err != nil {
			t.Fatalf("revoke %s: %v", victim, err)
		}
		wg.Wait()
		if len(applied) != len(rest) {
			t.Fatalf("revocation of %s reached %d of %d peers", victim, len(applied), len(rest))
		}
		last := slices.MaxFunc(applied, func(a, b time.Time) int { return a.Compare(b) })
		lasts = append(lasts, last.Sub(t0))
		for _, at := range applied {
			each = append(each, at.Sub(t0))
		}
	}
	t.Logf("revocation propagation, admin call → last of %d peers applied a map without the node, over %d revocations: p50 %v, p99 %v, max %v",
		nodes-1, revokes, pct(lasts, 50), pct(lasts, 99), slices.Max(lasts))
	t.Logf("per peer (%d samples): p50 %v, p99 %v", len(each), pct(each, 50), pct(each, 99))
	for _, nd := range all[revokes:] {
		if got := len(nd.Map().Peers); got != nodes-revokes-1 {
			t.Errorf("%s has %d peers, want %d", nd.Self().Name, got, nodes-revokes-1)
		}
	}
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))].Round(100 * time.Microsecond)
}
