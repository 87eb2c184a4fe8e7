package relay

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
)

func tryAllocate(t *testing.T, s *Server, transport, user, pass string) error {
	t.Helper()
	c := dialAs(t, s, transport, user, pass)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Allocate(ctx)
	return err
}

// TestAuthThrottle: after a burst of wrong passwords from one source, the
// right one from the same source is refused too until the back-off ends
// (issue 17 item 9: 3,000 wrong passwords in 161 ms, then the right one
// succeeded).
func TestAuthThrottle(t *testing.T) {
	clock := clocktest.New(time.Now())
	s := startRelay(t, func(c *Config) { c.Now = clock.Now })
	good, pass, _ := turncred.Credentials(s.Cred().Secret, "a", time.Hour, clock.Now())
	_, wrong, _ := turncred.Credentials([]byte("a guess, not the relay secret"), "a", time.Hour, clock.Now())
	const guesses = 100
	for i := range guesses {
		tr := wire.TransportUDP
		if i%2 == 1 {
			tr = wire.TransportTCP // one budget per source IP, whatever the transport
		}
		if err := tryAllocate(t, s, tr, good, wrong); err == nil {
			t.Fatalf("guess %d: allocation with a wrong password", i)
		}
	}
	if err := tryAllocate(t, s, wire.TransportUDP, good, pass); err == nil {
		t.Fatalf("the right password after %d wrong ones from the same source was accepted", guesses)
	}
	st := s.Stats()
	if st.Refused[ReasonAuthThrottled] == 0 || st.Refused[ReasonBadPassword] > guesses {
		t.Fatalf("refusals %+v", st.Refused)
	}
	clock.Add(2 * time.Minute) // past the back-off
	if err := tryAllocate(t, s, wire.TransportUDP, good, pass); err != nil {
		t.Fatalf("after the back-off: %v", err)
	}
}

// TestAuthLimiterBounded: the limiter tracks at most MaxSources sources,
// and a source in back-off is not the one forgotten while idle ones exist.
func TestAuthLimiterBounded(t *testing.T) {
	l, err := newAuthLimiter(AuthLimit{Burst: 1, MaxSources: 100})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	bad := netip.MustParseAddr("198.51.100.1")
	l.fail(bad, now)
	if !l.fail(bad, now) || !l.blocked(bad, now) {
		t.Fatal("two failures with Burst 1 did not start a back-off")
	}
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail(ip, now.Add(time.Hour)) // idle again by the next insertion
	}
	if n := len(l.src); n > 100 {
		t.Fatalf("%d sources tracked, want at most 100", n)
	}
	// IPv6 sources count per /64.
	a, b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	l.fail(a, now)
	l.fail(b, now)
	if !l.blocked(a, now) {
		t.Fatal("two failures from one /64 did not start a back-off")
	}
}

// TestCredentialLifetimeCapped: a credential expiring more than
// MaxCredentialTTL ahead is refused (issue 17 item 9: a 100-year expiry
// was accepted).
func TestCredentialLifetimeCapped(t *testing.T) {
	s := startRelay(t, nil)
	for _, ttl := range []time.Duration{100 * 365 * 24 * time.Hour, DefaultMaxCredentialTTL + time.Minute} {
		u, p, _ := turncred.Credentials(s.Cred().Secret, "a", ttl, time.Now())
		if err := tryAllocate(t, s, wire.TransportUDP, u, p); err == nil {
			t.Errorf("a credential valid for %v was accepted", ttl)
		}
	}
	if n := s.Stats().Refused[ReasonTooLong]; n != 2 {
		t.Fatalf("Refused[%s] = %d, want 2", ReasonTooLong, n)
	}
	u, p, _ := turncred.Credentials(s.Cred().Secret, "a", time.Hour, time.Now())
	if err := tryAllocate(t, s, wire.TransportUDP, u, p); err != nil {
		t.Fatalf("a one-hour credential: %v", err)
	}
}
