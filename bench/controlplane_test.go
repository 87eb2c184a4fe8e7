package bench

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestControlPlaneSmall runs one tiny scale (50 nodes, with revoke) and
// checks every row is there and positive where it must be. It never
// asserts speed.
func TestControlPlaneSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator and 50 simulated nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	o := Options{Quick: true, Out: &out}.withDefaults()
	before := runtime.NumGoroutine()
	// In-process coordinator: no binary build in a unit test.
	rs, err := controlPlaneRun(ctx, o, 50, true, "", "in-process")
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for _, r := range rs {
		if r.Setup != "controlplane-50" {
			t.Errorf("row %+v: setup %q", r, r.Setup)
		}
		got[r.Metric] = r
	}
	for _, m := range []string{"join_s", "coord_cpu_s", "streams_up_s", "coord_rss_mib",
		"fanout_p50_ms", "fanout_p99_ms", "revoke_p50_ms", "revoke_p99_ms"} {
		r, ok := got[m]
		if !ok {
			t.Errorf("no %s row", m)
			continue
		}
		if r.N == 0 {
			t.Errorf("%s: N = 0", m)
		}
		positive := m == "join_s" || m == "streams_up_s" || m == "coord_rss_mib"
		if positive && r.Median <= 0 || r.Median < 0 {
			t.Errorf("%s = %v", m, r.Median)
		}
	}
	if got["fanout_p50_ms"].N != 50 || got["revoke_p50_ms"].N != 49 {
		t.Errorf("fan-out over %d streams, revoke over %d; want 50 and 49", got["fanout_p50_ms"].N, got["revoke_p50_ms"].N)
	}
	// Everything torn down: goroutines return to about where they were.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after the run, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
