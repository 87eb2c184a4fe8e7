package overlay_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// nodeReports returns the node_report events in the coordinator's audit
// log, by reporting node name.
func nodeReports(t *testing.T, net *testnet.Net) map[string][]wire.ReportEvent {
	t.Helper()
	page, err := adminclient.New(net.Coord.AdminCred()).Audit(ctxT(t, 10*time.Second), wire.MaxAuditPage, 0, true, 0)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	out := map[string][]wire.ReportEvent{}
	for _, raw := range page.Records {
		var rec struct {
			Kind      string `json:"kind"`
			ActorName string `json:"actor_name"`
			Details   struct {
				Events []wire.ReportEvent `json:"events"`
			} `json:"details"`
		}
		if err := json.Unmarshal(raw, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Kind == audit.KindNodeReport {
			out[rec.ActorName] = append(out[rec.ActorName], rec.Details.Events...)
		}
	}
	return out
}

func waitReport(t *testing.T, net *testnet.Net, node string, what string, ok func(wire.ReportEvent) bool) wire.ReportEvent {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range nodeReports(t, net)[node] {
			if ok(e) {
				return e
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %s report from %s in the audit log; reports: %+v", what, node, nodeReports(t, net))
	return wire.ReportEvent{}
}

// TestNodeReportsReachAuditLog runs real nodes against a real coordinator:
// channel up after the first handshake, filter denials merged per flow,
// and channel down when the peer is removed, all land in the audit log.
func TestNodeReportsReachAuditLog(t *testing.T) {
	net := testnet.New(t)
	cfgA := net.NodeConfig("alpha")
	cfgA.ReportInterval = 200 * time.Millisecond
	a := net.StartNodeConfig(cfgA)
	b := net.StartNode("beta")
	testnet.WaitPeers(t, a, b)
	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	echoOnce(t, a, "beta:7000", "hello") // a handshake

	up := waitReport(t, net, "alpha", "channel_up", func(e wire.ReportEvent) bool {
		return e.Kind == wire.ReportChannelUp && e.Peer == "beta"
	})
	if up.Time.IsZero() {
		t.Errorf("channel_up without a time: %+v", up)
	}

	src := b.Map().Self.IPv4
	for port := range 5 {
		a.AddDenialForTest(overlay.Denial{Dir: "in", Proto: "tcp", Src: netip.AddrPortFrom(src, uint16(50000+port)),
			Dst: netip.AddrPortFrom(a.Map().Self.IPv4, 22), Peer: "beta", Rule: "default-deny"})
	}
	d := waitReport(t, net, "alpha", "denial", func(e wire.ReportEvent) bool { return e.Kind == wire.ReportDenial })
	if d.Count != 5 || d.Peer != "beta" || d.Dst.Port() != 22 || d.Rule != "default-deny" {
		t.Errorf("denial report %+v, want 5 packets from beta to :22", d)
	}

	if err := adminclient.New(net.Coord.AdminCred()).DeleteNode(context.Background(), "beta"); err != nil {
		t.Fatal(err)
	}
	down := waitReport(t, net, "alpha", "channel_down", func(e wire.ReportEvent) bool {
		return e.Kind == wire.ReportChannelDown && e.Peer == "beta"
	})
	if down.Reason != "removed from map" {
		t.Errorf("channel_down reason %q", down.Reason)
	}
	if st := a.ReportStats(); st.Sent < 3 || st.Lost != 0 {
		t.Errorf("report stats %+v", st)
	}
}
