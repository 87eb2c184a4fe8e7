package coordinator

import (
	"context"
	"errors"
	"fmt"
	"github.com/agentnet/agentnet/internal/clocktest"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// fromSource makes n's requests come from the loopback address src
// (Linux routes all of 127.0.0.0/8 to lo), so a test has several sources.
func (n *testNode) fromSource(src string) *testNode {
	tr := n.hc.Transport.(*http.Transport).Clone()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	tr.DialContext = d.DialContext
	n.t.Cleanup(tr.CloseIdleConnections)
	n.hc = &http.Client{Transport: tr}
	return n
}

// TestEnrollRateLimit: with the default limit (5/s, burst 20) a burst of
// enrollments from one source is refused with 429 rate_limited and
// Retry-After after 20; another source and the admin API are unaffected;
// refusals are counted and reach requests_refused_total.
func TestEnrollRateLimit(t *testing.T) {
	clock := clocktest.New(time.Now()) // frozen: no refill during the burst
	h := newHarness(t, func(c *Config) { c.Now = clock.Now; c.MetricsListen = "127.0.0.1:0" })
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	burst := DefaultEnrollLimit.Burst
	for i := range burst {
		newTestNode(t, h.c).enroll(tok, fmt.Sprintf("n%d", i))
	}
	_, status, er := newTestNode(t, h.c).tryEnroll(tok, "over")
	if status != http.StatusTooManyRequests || er.Code != wire.CodeRateLimited {
		t.Fatalf("enrollment %d from one source: %d %s, want 429 %s", burst+1, status, er.Code, wire.CodeRateLimited)
	}
	// Retry-After is whole seconds: 1/5 s rounds up to 1.
	n := newTestNode(t, h.c)
	resp, err := n.hc.Do(n.request(http.MethodPost, wire.PathEnroll, []byte(`{}`), nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Retry-After"); resp.StatusCode != http.StatusTooManyRequests || got != "1" {
		t.Fatalf("over the limit: %d Retry-After %q, want 429 and 1", resp.StatusCode, got)
	}

	other := newTestNode(t, h.c).fromSource("127.0.0.2")
	if _, status, er := other.tryEnroll(tok, "other"); status != http.StatusOK {
		t.Fatalf("enrollment from another source: %d %s: %s", status, er.Code, er.Error)
	}
	if got := h.nodeCount(); got != burst+1 { // admin API: its own limit
		t.Fatalf("%d nodes, want %d", got, burst+1)
	}

	clock.Add(time.Second) // refills 5 tokens
	if _, status, er := newTestNode(t, h.c).tryEnroll(tok, "later"); status != http.StatusOK {
		t.Fatalf("enrollment after a second: %d %s", status, er.Code)
	}
	if got := h.c.Stats().Refused[wire.CodeRateLimited]; got != 2 {
		t.Fatalf("Refused[%s] = %d, want 2", wire.CodeRateLimited, got)
	}
	fams := scrapeMetrics(t, h.c.MetricsAddr())
	if v, _ := metricValue(fams, "agentnet_coordinator_requests_refused_total", "code", wire.CodeRateLimited); v != 2 {
		t.Fatalf("requests_refused_total{code=%q} = %v, want 2", wire.CodeRateLimited, v)
	}
	if !strings.Contains(h.logs.String(), "reason="+wire.CodeRateLimited) {
		t.Fatalf("rate-limited refusal not logged:\n%s", h.logs)
	}
}

// TestAdminRateLimit: the admin limit applies before the secret is
// checked, so guessing is throttled and, once over, even the right secret
// waits.
func TestAdminRateLimit(t *testing.T) {
	clock := clocktest.New(time.Now())
	h := newHarness(t, func(c *Config) {
		c.Now = clock.Now
		c.RateLimits.Admin = RateLimit{PerSecond: 1, Burst: 3}
	})
	wrong := adminclient.New(wire.AdminCred{URL: h.c.URL(), Pin: h.c.Pin(), Secret: "guess"})
	for i := range 3 {
		_, err := wrong.Nodes(context.Background())
		if ae := (*wire.APIError)(nil); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Fatalf("guess %d: %v, want 401", i, err)
		}
	}
	_, err := h.admin.Nodes(context.Background())
	if ae := (*wire.APIError)(nil); !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != wire.CodeRateLimited {
		t.Fatalf("right secret over the limit: %v, want 429 %s", err, wire.CodeRateLimited)
	}
	clock.Add(time.Second)
	if _, err := h.admin.Nodes(context.Background()); err != nil {
		t.Fatalf("right secret after a second: %v", err)
	}
	st := h.c.Stats()
	if st.Refused[wire.CodeUnauthorized] != 3 || st.Refused[wire.CodeRateLimited] != 1 {
		t.Fatalf("refused %v, want 3 unauthorized and 1 rate_limited", st.Refused)
	}
}

// TestConsoleLoginRateLimit: login attempts beyond the burst get 429 with
// Retry-After and the login page, without the secret being checked.
func TestConsoleLoginRateLimit(t *testing.T) {
	clock := clocktest.New(time.Now())
	h := newConsoleHarness(t, func(c *Config) { c.Now = clock.Now })
	cc := newConsoleClient(t, h)
	for i := range DefaultLoginLimit.Burst {
		resp, _ := cc.post("/console/login", url.Values{"secret": {"wrong"}}, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong login %d: %d, want 401", i, resp.StatusCode)
		}
	}
	resp, body := cc.post("/console/login", url.Values{"secret": {h.c.AdminCred().Secret}}, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, "Too many login attempts") {
		t.Fatalf("login over the limit: %d Retry-After %q, want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := h.c.Stats().Refused[wire.CodeRateLimited]; got != 1 {
		t.Fatalf("Refused[%s] = %d, want 1", wire.CodeRateLimited, got)
	}
	clock.Add(time.Second)
	cc.login()
}

// TestRateLimitTable: the table never holds more than MaxSources; idle
// full buckets are swept; while it is full, new sources share one
// overflow bucket instead of getting one each.
func TestRateLimitTable(t *testing.T) {
	l := newSourceLimiter(RateLimit{PerSecond: 1, Burst: 2}, 3)
	now := time.Unix(1000, 0)
	src := func(i int) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 32) }
	for i := range 3 {
		if ok, _ := l.allow(src(i), now); !ok {
			t.Fatalf("source %d refused on its first request", i)
		}
	}
	// A spray of new sources: together they get the overflow bucket's
	// burst (2), then are refused, and the table stays at 3.
	allowed := 0
	for i := 3; i < 200; i++ {
		if ok, _ := l.allow(src(i), now); ok {
			allowed++
		}
	}
	if allowed != 2 || l.size() != 3 {
		t.Fatalf("spray of 197 new sources: %d allowed, table %d; want 2 and 3", allowed, l.size())
	}
	// Known sources keep their own buckets meanwhile.
	if ok, _ := l.allow(src(0), now); !ok {
		t.Fatal("known source refused while the table is full")
	}
	if ok, wait := l.allow(src(0), now); ok || wait != time.Second {
		t.Fatalf("source 0 third request: ok=%v wait=%v, want refused, 1s", ok, wait)
	}
	// After the refill time (burst/rate = 2 s) idle buckets are swept.
	now = now.Add(2 * time.Second)
	if ok, _ := l.allow(src(250), now); !ok || l.size() != 1 {
		t.Fatalf("after idle sweep: ok=%v table %d, want a new bucket in a table of 1", ok, l.size())
	}
}

func TestSourceOf(t *testing.T) {
	for _, c := range []struct{ remote, want string }{
		{"198.51.100.7:1234", "198.51.100.7/32"},
		{"[::ffff:198.51.100.7]:1", "198.51.100.7/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[fe80::1%lo]:443", "fe80::/64"},
		{"garbage", "invalid Prefix"},
	} {
		if got := sourceOf(&http.Request{RemoteAddr: c.remote}).String(); got != c.want {
			t.Errorf("sourceOf(%q) = %s, want %s", c.remote, got, c.want)
		}
	}
}

func TestParseRateLimit(t *testing.T) {
	for in, want := range map[string]RateLimit{
		"5/20": {PerSecond: 5, Burst: 20}, "0.5/1": {PerSecond: 0.5, Burst: 1}, "off": {Off: true}, " OFF ": {Off: true},
	} {
		got, err := ParseRateLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseRateLimit(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if back, err := ParseRateLimit(got.String()); err != nil || back != got {
			t.Errorf("round trip of %+v: %+v, %v", got, back, err)
		}
	}
	for _, bad := range []string{"", "5", "5/", "/5", "0/5", "-1/5", "5/0", "NaN/1", "Inf/1", "5/2.5", "x/y"} {
		if _, err := ParseRateLimit(bad); err == nil {
			t.Errorf("ParseRateLimit(%q) accepted", bad)
		}
	}
	if _, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", RateLimits: RateLimits{Enroll: RateLimit{PerSecond: -1}}}); err == nil || !strings.Contains(err.Error(), "RateLimits.Enroll") {
		t.Fatalf("negative rate: %v, want a RateLimits.Enroll error", err)
	}
}
