package overlay_test

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
)

// TestExposeConnCap is issue 17 item 5 end to end: a peer opening more
// connections to an --expose port than MaxConnsPerPeer has the extra ones
// reset, counted in agentnet_conn_refused_total{reason="per_source"};
// another peer still connects.
func TestExposeConnCap(t *testing.T) {
	local, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, local)

	n := testnet.New(t)
	acfg := n.NodeConfig("alpha")
	acfg.MetricsListen = "127.0.0.1:0"
	acfg.MaxConnsPerPeer = 2
	acfg.Frontends = overlay.Frontends{Exposes: []string{"7100=" + local.Addr().String()}}
	a := n.StartNodeConfig(acfg)
	b, c := n.StartNode("bravo"), n.StartNode("charlie")
	testnet.WaitPeers(t, a, b, c)

	for range 2 {
		hold(t, b, "alpha:7100")
	}
	conn, err := b.Dial(ctxT(t, 10*time.Second), "tcp", "alpha:7100")
	if err == nil {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second)) // bounds a failing test
		_, err = conn.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) && (err == nil || !isResetText(err.Error())) {
		t.Fatalf("bravo's third connection: %v, want a reset", err)
	}
	hold(t, c, "alpha:7100") // another peer is not affected

	m := scrapeMetrics(t, a.MetricsAddr())
	if v, ok := metricValue(m, "agentnet_conn_refused_total", "reason", "per_source"); !ok || v != 1 {
		t.Errorf(`agentnet_conn_refused_total{reason="per_source"} = %v (present %v), want 1`, v, ok)
	}
	if v, ok := metricValue(m, "agentnet_conn_refused_total", "reason", "total"); !ok || v != 0 {
		t.Errorf(`agentnet_conn_refused_total{reason="total"} = %v (present %v), want 0`, v, ok)
	}
}

// hold opens a connection from node to addr through alpha's expose, checks
// it echoes, and leaves it open until the test ends.
func hold(t *testing.T, from *overlay.Node, addr string) {
	t.Helper()
	c, err := from.Dial(ctxT(t, 10*time.Second), "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("echo through %s: %q %v", addr, b, err)
	}
	c.SetDeadline(time.Time{})
}

// isResetText recognises gVisor's reset error, which wraps no errno.
func isResetText(s string) bool { return strings.Contains(s, "reset") }
