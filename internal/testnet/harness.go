// Package testnet is the in-process test harness: a real coordinator
// (HTTPS, bbolt) and real nodes (wireguard-go, gVisor netstack) in one
// process, on 127.0.0.1 only. Tests of every package reuse it.
package testnet

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// Loopback is the listen address of every test node: 127.0.0.1, any port.
var Loopback = netip.MustParseAddrPort("127.0.0.1:0")

// Net is one test network: a coordinator and the nodes started on it.
type Net struct {
	T     testing.TB
	Dir   string
	Coord *coordinator.Coordinator
	Token string // reusable join token
	Log   *slog.Logger
	addr  string // the coordinator's listen address, kept across restarts
	mod   func(*coordinator.Config)
}

// Logger returns a logger that writes through t.Log at level (or
// AGENTNET_TEST_LOG when set).
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if v := os.Getenv("AGENTNET_TEST_LOG"); v != "" {
		_ = level.UnmarshalText([]byte(v))
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// New starts a coordinator in a temp dir and creates a reusable token.
func New(t testing.TB) *Net {
	t.Helper()
	return NewWith(t, nil)
}

// NewWith is New with mod (optional) applied to the coordinator's Config
// at every start, such as a settable clock for Config.Now.
func NewWith(t testing.TB, mod func(*coordinator.Config)) *Net {
	t.Helper()
	n := &Net{T: t, Dir: t.TempDir(), Log: Logger(t), mod: mod}
	n.StartCoordinator()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := adminclient.New(n.Coord.AdminCred()).CreateToken(ctx, wire.CreateTokenRequest{Reusable: true, TTLSeconds: 3600, Tags: []string{"tag:test"}})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	n.Token = tok.Token
	return n
}

// StartCoordinator (re)starts the coordinator on the same data dir and, after
// the first start, the same address.
func (n *Net) StartCoordinator() {
	n.T.Helper()
	listen := n.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	var c *coordinator.Coordinator
	var err error
	for i := 0; i < 50; i++ { // the old port may linger briefly after Close
		cfg := coordinator.Config{DataDir: filepath.Join(n.Dir, "coord"), Listen: listen, Logger: n.Log.With("c", "coord")}
		if n.mod != nil {
			n.mod(&cfg)
		}
		c, err = coordinator.New(cfg)
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		n.T.Fatalf("start coordinator: %v", err)
	}
	n.Coord = c
	n.addr = c.URL()[len("https://"):]
	n.T.Cleanup(func() { c.Close() })
}

// StopCoordinator closes the coordinator.
func (n *Net) StopCoordinator() {
	n.T.Helper()
	if err := n.Coord.Close(); err != nil {
		n.T.Fatalf("close coordinator: %v", err)
	}
}

// NodeConfig returns the config of a node named name in this net.
func (n *Net) NodeConfig(name string) overlay.Config {
	return overlay.Config{
		StateDir:      filepath.Join(n.Dir, name),
		Token:         n.Token,
		Name:          name,
		ListenAddr:    Loopback,
		EnrollTimeout: 5 * time.Second,
		Logger:        n.Log.With("c", name),
	}
}

// StartNode starts (or restarts, same state dir) the node called name; it is
// closed at the end of the test.
func (n *Net) StartNode(name string) *overlay.Node {
	n.T.Helper()
	return n.StartNodeConfig(n.NodeConfig(name))
}

// StartNodeConfig starts a node with an explicit config.
func (n *Net) StartNodeConfig(cfg overlay.Config) *overlay.Node {
	n.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nd, err := overlay.New(ctx, cfg)
	if err != nil {
		n.T.Fatalf("start node %s: %v", cfg.Name, err)
	}
	n.T.Cleanup(func() { nd.Close() })
	return nd
}

// WaitPeers waits until every node's map lists all the others.
func WaitPeers(t testing.TB, nodes ...*overlay.Node) {
	t.Helper()
	WaitPeersWithin(t, 10*time.Second, nodes...)
}

// WaitPeersWithin is WaitPeers with a deadline, for large meshes.
func WaitPeersWithin(t testing.TB, d time.Duration, nodes ...*overlay.Node) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ok := true
		for _, nd := range nodes {
			if len(nd.Map().Peers) < len(nodes)-1 {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("nodes did not learn each other within %v", d)
}
