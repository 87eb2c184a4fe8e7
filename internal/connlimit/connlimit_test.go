package connlimit

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/internal/logtest"
)

func TestLimiter(t *testing.T) {
	log, buf := logtest.Logger()
	clk := clocktest.New(time.Unix(1000, 0))
	l, err := New(Config{PerSource: 2, Total: 3, Logger: log, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("100.96.0.1")
	aMapped := netip.MustParseAddr("::ffff:100.96.0.1")
	b := netip.MustParseAddr("fd7a:115c:a1e0::2")
	c := netip.MustParseAddr("100.96.0.3")
	steps := []struct {
		src    netip.Addr
		ok     bool
		reason Reason
	}{
		{a, true, ""},
		{aMapped, true, ""},         // the same source as a
		{a, false, PerSource},       // a has 2
		{aMapped, false, PerSource}, // logged once: same (source, reason)
		{b, true, ""},
		{c, false, Total}, // 3 open
	}
	for i, s := range steps {
		reason, ok := l.Acquire(s.src)
		if ok != s.ok || reason != s.reason {
			t.Fatalf("step %d: Acquire(%v) = %q, %v; want %q, %v", i, s.src, reason, ok, s.reason, s.ok)
		}
	}
	if st := l.Stats(); st != (Stats{Open: 3, RefusedPerSource: 2, RefusedTotal: 1}) {
		t.Fatalf("stats %+v", st)
	}
	if n := strings.Count(buf.String(), "inbound connection refused"); n != 2 {
		t.Fatalf("%d refusal log lines, want 2 (one per source and reason):\n%s", n, buf.String())
	}
	clk.Add(LogInterval)
	if _, ok := l.Acquire(a); ok {
		t.Fatal("admitted over the per-source cap")
	}
	if n := strings.Count(buf.String(), "inbound connection refused"); n != 3 {
		t.Fatalf("%d refusal log lines after an interval, want 3", n)
	}

	l.Release(aMapped)
	if _, ok := l.Acquire(c); !ok {
		t.Fatal("a released slot was not reused")
	}
	l.Release(a)
	l.Release(b)
	l.Release(c)
	if st := l.Stats(); st.Open != 0 || len(l.bySrc) != 0 {
		t.Fatalf("after releasing all: %+v, %d sources", st, len(l.bySrc))
	}
}

func TestConfig(t *testing.T) {
	l, err := New(Config{})
	if err != nil || l.perSource != DefaultPerSource || l.total != DefaultTotal {
		t.Fatalf("defaults: %v %+v", err, l)
	}
	for _, cfg := range []Config{{PerSource: -1}, {Total: -1}} {
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "-1") {
			t.Errorf("New(%+v) = %v, want an error naming -1", cfg, err)
		}
	}
}
