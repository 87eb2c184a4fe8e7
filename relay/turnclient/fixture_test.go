package turnclient

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentnet/agentnet/relay"
	"github.com/agentnet/agentnet/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// turnFixture is a relay (relay.Server) on 127.0.0.1 (UDP, TCP and TLS,
// relaying to loopback peers, no bandwidth limit) and a credential for it
// as a map would carry it: what the TURN client's tests allocate on.
type turnFixture struct {
	srv   *relay.Server
	relay wire.Relay
}

func startTURNFixture(t *testing.T) *turnFixture {
	t.Helper()
	s, err := relay.New(context.Background(), relay.Config{
		Name: "fixture", Listen: "127.0.0.1:0", TLSListen: "127.0.0.1:0",
		DataDir: filepath.Join(t.TempDir(), "relay"), AllowLoopback: true, BandwidthPerUser: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &turnFixture{srv: s, relay: s.Cred().Relay("node", time.Hour, time.Now())}
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
