package relay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"go.uber.org/goleak"

	"github.com/agentnet/agentnet/relay/turnclient"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startRelay runs a relay on loopback (UDP, TCP and TLS) in a temporary
// data directory, closed at the end of the test.
func startRelay(t testing.TB, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		Name:      "r1",
		Listen:    "127.0.0.1:0",
		TLSListen: "127.0.0.1:0",
		DataDir:   filepath.Join(t.TempDir(), "relay"),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addrOf(t testing.TB, s *Server, transport string) wire.RelayAddr {
	t.Helper()
	for _, a := range s.Addrs() {
		if a.Transport == transport {
			return a
		}
	}
	t.Fatalf("relay has no %s address: %v", transport, s.Addrs())
	return wire.RelayAddr{}
}

// dial connects a TURN client for node user with a fresh credential.
func dial(t testing.TB, s *Server, transport, user string) *turnclient.Probe {
	t.Helper()
	u, p, _ := turncred.Credentials(s.Cred().Secret, user, time.Hour, time.Now())
	return dialAs(t, s, transport, u, p)
}

func dialAs(t testing.TB, s *Server, transport, username, password string) *turnclient.Probe {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := wire.Relay{Name: s.Cred().Name, Addrs: []wire.RelayAddr{addrOf(t, s, transport)}, TLSPin: s.Cred().TLSPin,
		Username: username, Password: password}
	c, err := turnclient.DialProbe(ctx, turnclient.Config{Relay: r, Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func allocate(t testing.TB, c *turnclient.Probe) netip.AddrPort {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ap, err := c.Allocate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func TestCredFileAndRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay")
	cfg := Config{Name: "r1", Listen: "127.0.0.1:0", TLSListen: "127.0.0.1:0", DataDir: dir}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	first := s.Cred()
	s.Close()
	for _, f := range []string{fileCred, fileSecret, fileTLSKey, fileTLSCrt} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
	}
	loaded, err := turncred.LoadCred(filepath.Join(dir, fileCred))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, first) {
		t.Fatalf("LoadCred = %+v\nwant %+v", loaded, first)
	}
	if len(first.Secret) != 32 || first.TLSPin == "" || len(first.Addrs) != 3 {
		t.Fatalf("cred incomplete: %+v", first)
	}

	s2, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Cred().TLSPin != first.TLSPin || !bytes.Equal(s2.Cred().Secret, first.Secret) {
		t.Fatalf("restart changed pin or secret: %s → %s", first.TLSPin, s2.Cred().TLSPin)
	}
	// The pin is the one the TLS listener presents: a TLS allocation works.
	allocate(t, dial(t, s2, wire.TransportTLS, "a"))
	s2.Close()

	// Without its certificate the relay issues a new one from the kept
	// key: the pin, and so relay.cred at the coordinator, stays valid.
	if err := os.Remove(filepath.Join(dir, fileTLSCrt)); err != nil {
		t.Fatal(err)
	}
	s3, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if s3.Cred().TLSPin != first.TLSPin {
		t.Fatalf("a new certificate changed the pin: %s → %s", first.TLSPin, s3.Cred().TLSPin)
	}
	allocate(t, dial(t, s3, wire.TransportTLS, "a"))

	// Damaged credential files fail with a clear error.
	for name, body := range map[string]string{
		"garbage":   "{",
		"no secret": `{"name":"x","addrs":[{"transport":"udp","addr":"203.0.113.2:3478"}]}`,
		"bad addr":  `{"name":"x","addrs":[{"transport":"udp","addr":"0.0.0.0:3478"}],"secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}`,
		"bad tls":   `{"name":"x","addrs":[{"transport":"tls","addr":"203.0.113.2:5349"}],"secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}`,
	} {
		p := filepath.Join(t.TempDir(), "c")
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := turncred.LoadCred(p); err == nil {
			t.Errorf("%s: LoadCred accepted %s", name, body)
		}
	}
	if _, err := turncred.LoadCred(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadCred of a missing file succeeded")
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]Config{
		"no data":         {Listen: "127.0.0.1:0"},
		"no listen":       {DataDir: dir},
		"unspecified":     {DataDir: dir, Listen: "0.0.0.0:0"},
		"v6 public":       {DataDir: dir, Listen: "127.0.0.1:0", PublicIP: netip.MustParseAddr("2001:db8::1")},
		"bad listen":      {DataDir: dir, Listen: "localhost"},
		"negative allocs": {DataDir: dir, Listen: "127.0.0.1:0", MaxAllocationsPerUser: -1},
	} {
		if s, err := New(context.Background(), cfg); err == nil {
			s.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// TestRelayData relays packets both ways between a client on each
// transport and a UDP client, through the relay on loopback.
func TestRelayData(t *testing.T) {
	s := startRelay(t, func(c *Config) { c.AllowLoopback = true })
	b := dial(t, s, wire.TransportUDP, "b")
	bAddr := allocate(t, b)
	for _, transport := range []string{wire.TransportUDP, wire.TransportTCP, wire.TransportTLS} {
		t.Run(transport, func(t *testing.T) {
			a := dial(t, s, transport, "a-"+transport)
			aAddr := allocate(t, a)
			exchange(t, a, aAddr, b, bAddr)
		})
	}
	st := s.Stats()
	if st.BytesToPeers == 0 || st.BytesFromPeers == 0 || st.AllocationsTotal != 4 {
		t.Fatalf("stats after relaying: %+v", st)
	}
}

// exchange sends from a to b's relayed address and back, retrying while
// permissions and channels are set up, and checks the payloads.
func exchange(t testing.TB, a *turnclient.Probe, aAddr netip.AddrPort, b *turnclient.Probe, bAddr netip.AddrPort) {
	t.Helper()
	// b must permit a's relayed address before a's packets are relayed to it.
	if _, err := b.WriteTo([]byte("open"), aAddr); err != nil {
		t.Fatalf("permit: %v", err)
	}
	recv := func(c *turnclient.Probe, want string, from netip.AddrPort) bool {
		buf := make([]byte, 1600)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, src, err := c.ReadFrom(buf)
			if err != nil {
				return false
			}
			if string(buf[:n]) == want && src == from {
				return true
			}
		}
	}
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("no packet relayed from %v to %v", aAddr, bAddr)
		}
		if _, err := a.WriteTo([]byte("ping"), bAddr); err != nil {
			t.Fatalf("send: %v", err)
		}
		if recv(b, "ping", aAddr) {
			break
		}
	}
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("no packet relayed from %v to %v", bAddr, aAddr)
		}
		b.WriteTo([]byte("pong"), aAddr)
		if recv(a, "pong", bAddr) {
			break
		}
	}
}

// listenPeer is a plain UDP socket standing in for a peer the relay must
// not reach; got reports whether anything arrived.
func listenPeer(t testing.TB) (netip.AddrPort, func() bool) {
	uc := loopbackUDP(t)
	return uc.LocalAddr().(*net.UDPAddr).AddrPort(), func() bool {
		uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, _, err := uc.ReadFrom(make([]byte, 100))
		return err == nil
	}
}

func TestRefuseLoopbackPeer(t *testing.T) {
	s := startRelay(t, nil)
	a := dial(t, s, wire.TransportUDP, "a")
	allocate(t, a)
	peer, got := listenPeer(t)
	_, err := a.WriteTo([]byte("ssrf"), peer)
	if err == nil {
		t.Error("write towards a loopback peer succeeded; want the permission refused")
	}
	if got() {
		t.Fatal("relay sent to a loopback peer without AllowLoopback")
	}
	if n := s.Stats().Refused[ReasonPeerLoopback]; n == 0 {
		t.Fatalf("Refused[%s] = 0; stats %+v", ReasonPeerLoopback, s.Stats())
	}
}

func TestRefuseDeniedAndSpecialPeers(t *testing.T) {
	s := startRelay(t, func(c *Config) { c.Deny = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")} })
	for peer, reason := range map[string]string{
		"198.51.100.7:9":       ReasonPeerDenied,
		"169.254.1.1:9":        ReasonPeerLinkLocal,
		"224.0.0.1:9":          ReasonPeerMulticast,
		"255.255.255.255:9":    ReasonPeerBroadcast,
		"0.0.0.0:9":            ReasonPeerUnspec,
		"127.0.0.53:53":        ReasonPeerLoopback,
		"[2001:db8::1]:9":      ReasonPeerDocs,
		"[::ffff:127.0.0.1]:9": ReasonPeerLoopback,
	} {
		a := dial(t, s, wire.TransportUDP, "a")
		allocate(t, a)
		before := s.Stats().Refused[reason]
		a.WriteTo([]byte("x"), netip.MustParseAddrPort(peer))
		if s.Stats().Refused[reason] == before {
			t.Errorf("peer %s: Refused[%s] did not move; stats %+v", peer, reason, s.Stats().Refused)
		}
		a.Close()
	}
}

func TestRefuseSelf(t *testing.T) {
	s := startRelay(t, func(c *Config) { c.AllowLoopback = true })
	a := dial(t, s, wire.TransportUDP, "a")
	allocate(t, a)
	// A binding request through the relay to its own STUN alt port must
	// never reach it (the alt port would answer it).
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	for _, to := range []netip.AddrPort{s.STUNAlt(), addrOf(t, s, wire.TransportUDP).Addr} {
		for range 3 {
			a.WriteTo(req.Raw, to)
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Each of the six is refused (and counted) when it arrives: wait
	// (bounded) for all six rather than assume 100 ms is enough.
	for deadline := time.Now().Add(5 * time.Second); s.Stats().Refused[ReasonPeerSelf] < 6; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Refused[%s] = %d within 5s, want 6; stats %+v", ReasonPeerSelf, s.Stats().Refused[ReasonPeerSelf], s.Stats())
		}
	}
	if st := s.Stats(); st.STUNAltAnswered != 0 {
		t.Fatalf("relay relayed to its own STUN alt port (%d answers)", st.STUNAltAnswered)
	}
	// A loopback peer that is not the relay itself is allowed with
	// AllowLoopback.
	peer, got := listenPeer(t)
	for range 3 {
		a.WriteTo([]byte("hi"), peer)
	}
	if !got() {
		t.Fatal("AllowLoopback: nothing relayed to a loopback peer")
	}
}

func TestRefuseBadCredentials(t *testing.T) {
	now := time.Now()
	s := startRelay(t, nil)
	secret := s.Cred().Secret
	u, _, _ := turncred.Credentials(secret, "a", time.Hour, now)
	uOld, pOld, _ := turncred.Credentials(secret, "a", -time.Minute, now)
	_, pOther, _ := turncred.Credentials([]byte("another relay's secret!"), "a", time.Hour, now)
	for _, tc := range []struct {
		name, user, pass, reason string
	}{
		{"bad password", u, pOther, ReasonBadPassword},
		{"expired", uOld, pOld, ReasonExpired},
		{"malformed", "a", pOther, ReasonBadUsername},
	} {
		c := dialAs(t, s, wire.TransportUDP, tc.user, tc.pass)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Allocate(ctx)
		cancel()
		if err == nil {
			t.Errorf("%s: allocation succeeded", tc.name)
		}
		if s.Stats().Refused[tc.reason] == 0 {
			t.Errorf("%s: Refused[%s] = 0; stats %+v", tc.name, tc.reason, s.Stats().Refused)
		}
	}
	if s.Stats().AllocationsTotal != 0 {
		t.Fatalf("allocations made with bad credentials: %+v", s.Stats())
	}
}

func TestAllocationQuota(t *testing.T) {
	s := startRelay(t, func(c *Config) { c.MaxAllocationsPerUser = 2 })
	var first *turnclient.Probe
	for i := range 2 {
		c := dial(t, s, wire.TransportUDP, "a")
		allocate(t, c)
		if i == 0 {
			first = c
		}
	}
	c := dial(t, s, wire.TransportTCP, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Allocate(ctx); err == nil {
		t.Fatal("third allocation of the same node succeeded with MaxAllocationsPerUser 2")
	}
	if s.Stats().Refused[ReasonQuota] == 0 || s.Stats().Allocations != 2 {
		t.Fatalf("stats: %+v", s.Stats())
	}
	// Another node is not affected; releasing frees a slot.
	allocate(t, dial(t, s, wire.TransportUDP, "b"))
	first.Close()
	deadline := time.Now().Add(3 * time.Second)
	for s.Stats().Allocations != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	allocate(t, dial(t, s, wire.TransportUDP, "a"))
}

func TestBandwidthLimit(t *testing.T) {
	s := startRelay(t, func(c *Config) { c.AllowLoopback = true; c.BandwidthPerUser = 64 << 10 })
	a := dial(t, s, wire.TransportUDP, "a")
	aAddr := allocate(t, a)
	b := dial(t, s, wire.TransportUDP, "b")
	bAddr := allocate(t, b)
	exchange(t, a, aAddr, b, bAddr)
	payload := make([]byte, 1000)
	for range 300 { // 300 kB at once: far over a 64 kB burst
		a.WriteTo(payload, bAddr)
	}
	// The relay reads the burst in the background: wait (bounded) until it
	// has counted a drop rather than assume 100 ms is enough.
	for deadline := time.Now().Add(5 * time.Second); s.Stats().Refused[ReasonBandwidth] == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no packet dropped over the bandwidth limit within 5s: %+v", s.Stats())
		}
	}
}

func TestCloseUnblocksClients(t *testing.T) {
	s := startRelay(t, func(c *Config) { c.AllowLoopback = true })
	for _, tr := range []string{wire.TransportUDP, wire.TransportTCP, wire.TransportTLS} {
		allocate(t, dial(t, s, tr, "a"))
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("close: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return")
	}
	if s.Stats().Allocations != 0 {
		t.Fatalf("allocations left after Close: %+v", s.Stats())
	}
}

// loopbackUDP is a UDP socket on 127.0.0.1, closed when the test ends.
func loopbackUDP(tb testing.TB) *net.UDPConn {
	tb.Helper()
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { uc.Close() })
	return uc
}
