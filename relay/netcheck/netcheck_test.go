package netcheck

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentnet/agentnet/relay"
	"github.com/agentnet/agentnet/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startRelay runs a relay on loopback (UDP, TCP and TLS), closed at the
// end of the test.
func startRelay(t *testing.T, mod func(*relay.Config)) *relay.Server {
	t.Helper()
	cfg := relay.Config{Name: "r1", Listen: "127.0.0.1:0", TLSListen: "127.0.0.1:0",
		DataDir: filepath.Join(t.TempDir(), "relay")}
	if mod != nil {
		mod(&cfg)
	}
	s, err := relay.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestSTUNBothPorts: a relay answers binding requests on its main UDP
// port and on the STUN alt port (the TLS port number, else Listen+1),
// with the client's address, and nothing else on the alt port.
func TestSTUNBothPorts(t *testing.T) {
	for _, tls := range []bool{true, false} {
		s := startRelay(t, func(c *relay.Config) {
			if !tls {
				c.TLSListen = ""
			}
		})
		uc := loopbackUDP(t)
		self := uc.LocalAddr().(*net.UDPAddr).AddrPort()
		main := addrOf(t, s, wire.TransportUDP).Addr
		if s.STUNAlt() == main || !s.STUNAlt().IsValid() {
			t.Fatalf("STUN alt %v must be a second port (main %v)", s.STUNAlt(), main)
		}
		for _, to := range []netip.AddrPort{main, s.STUNAlt()} {
			got, _, err := stunBinding(context.Background(), uc, to, 2*time.Second)
			if err != nil {
				t.Fatalf("tls=%v: STUN binding to %v: %v", tls, to, err)
			}
			if got != self {
				t.Fatalf("tls=%v: mapped address from %v = %v, want %v", tls, to, got, self)
			}
		}
		if tls && s.STUNAlt().Port() != addrOf(t, s, wire.TransportTLS).Addr.Port() {
			t.Errorf("STUN alt %v is not the TLS port %v", s.STUNAlt(), addrOf(t, s, wire.TransportTLS).Addr)
		}
		// The counter follows the answer's send, which the client may read
		// first: wait for it.
		for deadline := time.Now().Add(2 * time.Second); s.Stats().STUNAltAnswered < 1 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		if n := s.Stats().STUNAltAnswered; n != 1 {
			t.Errorf("STUNAltAnswered = %d, want 1", n)
		}
		// Garbage to the alt port gets no answer.
		uc.WriteToUDPAddrPort([]byte("hello relay, not STUN"), s.STUNAlt())
		uc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := uc.ReadFromUDPAddrPort(make([]byte, 100)); err == nil {
			t.Errorf("alt port answered %d bytes to a non-STUN packet", n)
		}
		s.Close()
	}
}

func TestCheck(t *testing.T) {
	s := startRelay(t, nil)
	now := time.Now()
	good := s.Cred().Relay("node-a", time.Hour, now)
	expired := s.Cred().Relay("node-a", -time.Hour, now)
	expired.Name = "expired"
	badPin := good
	badPin.Name, badPin.TLSPin = "bad-pin", wire.PinPrefix+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep := Check(ctx, Config{Relays: []wire.Relay{good, expired, badPin}, Timeout: 3 * time.Second})
	if !rep.UDP || rep.Mapping != MappingIndependent || len(rep.Relays) != 3 {
		t.Fatalf("report: %+v", rep)
	}
	r := rep.Relays[0]
	if !r.Mapped.IsValid() || r.Mapped != r.AltMapped || r.Mapping != MappingIndependent || r.LatencyMS <= 0 || r.STUNError != "" {
		t.Fatalf("good relay: %+v", r)
	}
	if len(r.Allocs) != 3 {
		t.Fatalf("good relay transports: %+v", r.Allocs)
	}
	for _, a := range r.Allocs {
		if !a.OK || !a.Relayed.IsValid() || a.Error != "" {
			t.Errorf("good relay %s: %+v", a.Transport, a)
		}
	}
	if r := rep.Relays[1]; r.CredError == "" || anyOK(r.Allocs) {
		t.Errorf("expired credential: %+v", r)
	}
	for _, a := range rep.Relays[2].Allocs {
		if a.Transport == wire.TransportTLS && (a.OK || !strings.Contains(a.Error, "pin")) {
			t.Errorf("TLS with a wrong pin: %+v", a)
		}
		if a.Transport != wire.TransportTLS && !a.OK {
			t.Errorf("bad pin relay %s: %+v", a.Transport, a)
		}
	}
	// Every check allocation was released.
	deadline := time.Now().Add(3 * time.Second)
	for s.Stats().Allocations != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.Stats().Allocations; n != 0 {
		t.Fatalf("%d allocations left after Check", n)
	}
}

func TestCheckUnreachable(t *testing.T) {
	s := startRelay(t, nil)
	r := s.Cred().Relay("node-a", time.Hour, time.Now())
	s.Close() // nothing answers any more
	rep := Check(context.Background(), Config{Relays: []wire.Relay{r}, Timeout: 700 * time.Millisecond})
	if rep.UDP || rep.Mapping != MappingUnknown || rep.Relays[0].STUNError == "" || anyOK(rep.Relays[0].Allocs) {
		t.Fatalf("report for a dead relay: %+v", rep)
	}
}

// addrOf returns s's address for transport.
func addrOf(t testing.TB, s *relay.Server, transport string) wire.RelayAddr {
	t.Helper()
	for _, a := range s.Addrs() {
		if a.Transport == transport {
			return a
		}
	}
	t.Fatalf("relay has no %s address: %v", transport, s.Addrs())
	return wire.RelayAddr{}
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

func anyOK(ts []TransportReport) bool {
	for _, t := range ts {
		if t.OK {
			return true
		}
	}
	return false
}
