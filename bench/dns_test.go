package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestDNSRows runs the DNS suite briefly and checks its rows. It never
// asserts speed.
func TestDNSRows(t *testing.T) {
	if testing.Short() {
		t.Skip("runs DNS load for a second")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	rs, err := DNS(ctx, Options{Quick: true, Duration: 300 * time.Millisecond, Out: &out})
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, s := range []string{"dns-udp", "dns-tcp"} {
		for _, m := range []string{"dns_qps", "dns_p50_us", "dns_p99_us"} {
			want[s+"/"+m] = true
		}
	}
	for _, r := range rs {
		k := r.Setup + "/" + r.Metric
		if !want[k] {
			t.Errorf("unexpected row %+v", r)
			continue
		}
		delete(want, k)
		if r.N == 0 || r.Median <= 0 {
			t.Errorf("%s: %+v", k, r)
		}
	}
	for k := range want {
		t.Errorf("no row %s", k)
	}
}
