package overlay

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentnet/agentnet/relay"
	"github.com/agentnet/agentnet/wire"
)

// turnFixture is a real relay (relay.Server) on 127.0.0.1 (UDP, TCP and
// TLS, relaying to loopback peers, no bandwidth limit) and a credential for
// it as a map would carry it.
type turnFixture struct {
	srv   *relay.Server
	relay wire.Relay
}

func startTURNFixture(t testing.TB) *turnFixture {
	t.Helper()
	s, err := relay.New(context.Background(), relay.Config{Name: "fixture", Listen: "127.0.0.1:0", TLSListen: "127.0.0.1:0",
		DataDir: filepath.Join(t.TempDir(), "relay"), AllowLoopback: true, BandwidthPerUser: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &turnFixture{srv: s, relay: s.Cred().Relay("node", time.Hour, time.Now())}
}

// StartRelayForTest starts a relay on 127.0.0.1 (UDP, TCP, TLS) and returns
// it as a map would list it, with a valid credential.
func StartRelayForTest(t testing.TB) wire.Relay { return startTURNFixture(t).relay }
