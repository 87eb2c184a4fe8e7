package coordinator

import (
	"net/netip"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/agentnet/agentnet/internal/metricsserver/metricstest"
	"github.com/agentnet/agentnet/wire"
)

// Shorthands for the shared scrape helpers.
var (
	scrapeMetrics = metricstest.Scrape
	metricValue   = metricstest.Value
)

// waitMetrics scrapes until ok holds, failing after d.
func waitMetrics(t *testing.T, ap netip.AddrPort, d time.Duration, what string, ok func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		fams := scrapeMetrics(t, ap)
		if ok(fams) {
			return fams
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %s not seen within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetricsOffByDefault(t *testing.T) {
	h := newHarness(t, nil)
	if ap := h.c.MetricsAddr(); ap.IsValid() {
		t.Errorf("MetricsAddr = %v with MetricsListen unset, want zero", ap)
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MetricsListen = "127.0.0.1:0" })
	ap := h.c.MetricsAddr()
	if !ap.IsValid() || ap.Port() == 0 {
		t.Fatalf("MetricsAddr = %v, want a bound address", ap)
	}

	fams := scrapeMetrics(t, ap)
	for _, s := range []struct {
		name   string
		labels []string
	}{
		{"agentnet_coordinator_enrollments_total", []string{"result", "new"}},
		{"agentnet_coordinator_enrollments_total", []string{"result", "reenrolled"}},
		{"agentnet_coordinator_netmap_pushes_total", nil},
		{"agentnet_coordinator_netmap_push_latency_seconds", nil},
		{"agentnet_coordinator_nodes", nil},
		{"agentnet_coordinator_nodes_online", nil},
		{"agentnet_coordinator_tokens_created_total", nil},
		{"agentnet_coordinator_updates_total", nil},
		{"agentnet_coordinator_requests_total", nil},
		{"go_goroutines", nil},
	} {
		if v, ok := metricValue(fams, s.name, s.labels...); !ok {
			t.Errorf("series %s%v missing from the first scrape", s.name, s.labels)
		} else if v != 0 && s.name != "go_goroutines" && s.name != "agentnet_coordinator_requests_total" {
			t.Errorf("%s%v = %v before any activity, want 0", s.name, s.labels, v)
		}
	}

	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	s := a.openStream(h.c.PublicKey())
	s.waitMap(time.Second, "alpha with bravo", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return ok })
	ep := netip.MustParseAddrPort("198.51.100.7:51820")
	b.update(ep)
	s.waitMap(time.Second, "bravo's endpoint", func(m *wire.Map) bool {
		p, ok := m.Peer("bravo")
		return ok && len(p.Endpoints) == 1
	})
	if _, code, _ := newTestNode(t, h.c).tryEnroll("not-a-token", "charlie"); code < 400 {
		t.Fatalf("enroll with a bad token: status %d, want a refusal", code)
	}

	fams = waitMetrics(t, ap, 2*time.Second, "two maps pushed and timed", func(f map[string]*dto.MetricFamily) bool {
		n, _ := metricValue(f, "agentnet_coordinator_netmap_push_latency_seconds")
		return n >= 2
	})
	want := []struct {
		name   string
		labels []string
		min    float64
		max    float64
	}{
		{"agentnet_coordinator_enrollments_total", []string{"result", "new"}, 2, 2},
		{"agentnet_coordinator_enrollments_total", []string{"result", "reenrolled"}, 0, 0},
		{"agentnet_coordinator_tokens_created_total", nil, 1, 1},
		{"agentnet_coordinator_updates_total", nil, 1, 1},
		{"agentnet_coordinator_netmap_pushes_total", nil, 2, 100},
		{"agentnet_coordinator_netmap_push_latency_seconds", nil, 2, 100},
		{"agentnet_coordinator_nodes", nil, 2, 2},
		{"agentnet_coordinator_nodes_online", nil, 1, 1},
	}
	for _, w := range want {
		v, ok := metricValue(fams, w.name, w.labels...)
		if !ok || v < w.min || v > w.max {
			t.Errorf("%s%v = %v (present %v), want in [%v, %v]", w.name, w.labels, v, ok, w.min, w.max)
		}
	}
	if f := fams["agentnet_coordinator_requests_refused_total"]; f == nil || len(f.GetMetric()) == 0 {
		t.Error("agentnet_coordinator_requests_refused_total has no series after a refused enrollment")
	} else if code := f.GetMetric()[0].GetLabel()[0]; code.GetName() != "code" || code.GetValue() == "" {
		t.Errorf("refused series label %s=%q, want a code", code.GetName(), code.GetValue())
	}
	if h := fams["agentnet_coordinator_netmap_push_latency_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleSum() <= 0 || h.GetSampleSum() > 10 {
		t.Errorf("push latency sum = %vs over %d maps, want (0, 10]", h.GetSampleSum(), h.GetSampleCount())
	}

	s.close()
	waitMetrics(t, ap, 2*time.Second, "alpha offline", func(f map[string]*dto.MetricFamily) bool {
		v, _ := metricValue(f, "agentnet_coordinator_nodes_online")
		return v == 0
	})

	h.c.Close()
	if !metricstest.Refused(ap) {
		t.Fatal("metrics listener still accepts after Close")
	}
}
