package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

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
	rep := Check(ctx, CheckConfig{Relays: []wire.Relay{good, expired, badPin}, Timeout: 3 * time.Second})
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
	rep := Check(context.Background(), CheckConfig{Relays: []wire.Relay{r}, Timeout: 700 * time.Millisecond})
	if rep.UDP || rep.Mapping != MappingUnknown || rep.Relays[0].STUNError == "" || anyOK(rep.Relays[0].Allocs) {
		t.Fatalf("report for a dead relay: %+v", rep)
	}
}

func anyOK(ts []TransportReport) bool {
	for _, t := range ts {
		if t.OK {
			return true
		}
	}
	return false
}
