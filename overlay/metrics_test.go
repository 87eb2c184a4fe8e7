package overlay_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/metricsserver/metricstest"
	"github.com/agentnet/agentnet/internal/testnet"
)

// Shorthands for the shared scrape helpers.
var (
	scrapeMetrics = metricstest.Scrape
	metricValue   = metricstest.Value
)

func TestMetrics(t *testing.T) {
	n := testnet.New(t)
	cfg := n.NodeConfig("alpha")
	cfg.MetricsListen = "127.0.0.1:0"
	a := n.StartNodeConfig(cfg)
	b := n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	if ap := b.MetricsAddr(); ap.IsValid() {
		t.Errorf("bravo MetricsAddr = %v with MetricsListen unset, want zero", ap)
	}
	ap := a.MetricsAddr()
	if !ap.IsValid() || ap.Port() == 0 {
		t.Fatalf("MetricsAddr = %v, want a bound address", ap)
	}

	type series struct {
		name   string
		labels []string
	}
	all := []series{
		{"agentnet_node_peer_receive_bytes_total", []string{"peer", "bravo"}},
		{"agentnet_node_peer_transmit_bytes_total", []string{"peer", "bravo"}},
		{"agentnet_node_peer_path_info", []string{"peer", "bravo"}},
		{"agentnet_node_peer_last_handshake_seconds", []string{"peer", "bravo"}},
		{"agentnet_node_peers", nil},
		{"agentnet_node_coordinator_connected", nil},
		{"agentnet_node_netmap_serial", nil},
		{"agentnet_node_netmaps_refused_total", nil},
		{"agentnet_node_handshake_initiations_parked_sent_total", nil},
		{"agentnet_node_handshake_initiations_redelivered_total", nil},
		{"agentnet_node_handshake_initiations_tiebreak_dropped_total", nil},
		{"agentnet_node_packets_no_path_total", nil},
		{"agentnet_node_udp_receive_packets_total", nil},
		{"agentnet_node_udp_transmit_packets_total", nil},
		{"agentnet_node_udp_receive_bytes_total", nil},
		{"agentnet_node_udp_transmit_bytes_total", nil},
		{"agentnet_node_udp_receive_drops_total", nil},
		{"agentnet_dns_queries_total", []string{"result", "answer"}},
		{"agentnet_dns_queries_total", []string{"result", "nxdomain"}},
		{"agentnet_dns_queries_total", []string{"result", "servfail"}},
		{"agentnet_filter_packets_total", []string{"rule", "default deny", "verdict", "deny", "direction", "inbound"}},
		{"agentnet_filter_packets_total", []string{"rule", "allow-all", "verdict", "allow", "direction", "outbound"}},
		{"agentnet_filter_invalid_packets_total", []string{"reason", "malformed", "direction", "inbound"}},
		{"agentnet_filter_rejects_total", nil},
		{"agentnet_filter_spoofed_packets_total", nil},
		{"agentnet_filter_flows", nil},
		{"agentnet_filter_flows_evicted_total", nil},
		{"agentnet_filter_policy_version", nil},
		{"go_goroutines", nil},
	}
	before := scrapeMetrics(t, ap)
	for _, s := range all {
		if _, ok := metricValue(before, s.name, s.labels...); !ok {
			t.Errorf("series %s%v missing", s.name, s.labels)
		}
	}
	if v, _ := metricValue(before, "agentnet_node_peers"); v != 1 {
		t.Errorf("agentnet_node_peers = %v, want 1", v)
	}
	if v, _ := metricValue(before, "agentnet_node_netmap_serial"); v <= 0 {
		t.Errorf("agentnet_node_netmap_serial = %v, want > 0", v)
	}

	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	echoOnce(t, a, "bravo:7000", strings.Repeat("metrics ", 512))
	if _, err := a.Resolver().LookupNetIP(ctxT(t, 5*time.Second), "ip4", "bravo.agents.internal"); err != nil {
		t.Fatalf("resolve bravo: %v", err)
	}
	if _, err := a.Resolver().LookupNetIP(ctxT(t, 5*time.Second), "ip4", "nobody.agents.internal"); err == nil {
		t.Fatal("unknown name resolved")
	}

	after := scrapeMetrics(t, ap)
	for _, s := range []series{
		{"agentnet_node_peer_receive_bytes_total", []string{"peer", "bravo"}},
		{"agentnet_node_peer_transmit_bytes_total", []string{"peer", "bravo"}},
		{"agentnet_node_udp_receive_packets_total", nil},
		{"agentnet_node_udp_transmit_packets_total", nil},
		{"agentnet_node_udp_receive_bytes_total", nil},
		{"agentnet_node_udp_transmit_bytes_total", nil},
		{"agentnet_dns_queries_total", []string{"result", "answer"}},
		{"agentnet_dns_queries_total", []string{"result", "nxdomain"}},
		{"agentnet_filter_packets_total", []string{"rule", "allow-all", "verdict", "allow", "direction", "outbound"}},
	} {
		v0, _ := metricValue(before, s.name, s.labels...)
		v1, _ := metricValue(after, s.name, s.labels...)
		if v1 <= v0 {
			t.Errorf("%s%v = %v after traffic, was %v; want it to grow", s.name, s.labels, v1, v0)
		}
	}
	if v, _ := metricValue(after, "agentnet_node_peer_transmit_bytes_total", "peer", "bravo"); v < 4096 {
		t.Errorf("transmit bytes to bravo = %v after a 4 KiB echo, want >= 4096", v)
	}
	if v, ok := metricValue(after, "agentnet_node_peer_path_info", "peer", "bravo", "path", "direct"); !ok || v != 1 {
		t.Errorf(`agentnet_node_peer_path_info{peer="bravo",path="direct"} = %v (present %v), want 1`, v, ok)
	}
	if v, _ := metricValue(after, "agentnet_node_peer_last_handshake_seconds", "peer", "bravo"); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last handshake with bravo = %v, want a recent unix time", v)
	}
	// The coordinator runs its default policy, one rule "allow-all".
	// alpha opened the connection: its packets and bravo's replies count on
	// alpha's outbound rule and on bravo's inbound rule.
	fa, fb := a.Status().Filter, b.Status().Filter
	if len(fa.Rules) != 2 || fa.Rules[1].Rule != "allow-all" || fa.Rules[1].Direction != "outbound" || fa.Rules[1].Allowed == 0 || fa.Flows == 0 {
		t.Errorf("alpha's filter status after traffic: %+v", fa)
	}
	if len(fb.Rules) != 2 || fb.Rules[0].Direction != "inbound" || fb.Rules[0].Allowed == 0 {
		t.Errorf("bravo's filter status after traffic: %+v", fb)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, _ := metricValue(scrapeMetrics(t, ap), "agentnet_node_coordinator_connected"); v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agentnet_node_coordinator_connected never became 1")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if !metricstest.Refused(ap) {
		t.Fatal("metrics listener still accepts after Close")
	}
}
