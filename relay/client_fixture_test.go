package relay

import (
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// turnFixture is this package's relay on 127.0.0.1 (UDP, TCP and TLS,
// relaying to loopback peers, no bandwidth limit) and a credential for it
// as a map would carry it: what the TURN client's tests allocate on.
type turnFixture struct {
	srv   *Server
	relay wire.Relay
}

func startTURNFixture(t *testing.T) *turnFixture {
	t.Helper()
	s := startRelay(t, func(c *Config) {
		c.Name, c.AllowLoopback, c.BandwidthPerUser = "fixture", true, -1
	})
	return &turnFixture{srv: s, relay: s.Cred().Relay("node", time.Hour, time.Now())}
}
