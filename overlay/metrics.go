package overlay

import (
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentnet/agentnet/internal/metricsserver"
)

// Prometheus metrics of a node (Config.MetricsListen).
//
// Everything is read at scrape time from counters the node keeps anyway
// (Status with WireGuard's UAPI stats, peerBind, Bind.Stats, dns
// Server.Stats), so the data path does no extra work for metrics. Each
// node has its own registry: several nodes may run in one process.

// nodeCollector is a prometheus.Collector over one node's counters.
type nodeCollector struct {
	n *Node

	peerRx, peerTx, peerPath, peerHandshake        *prometheus.Desc
	peers, connected, serial, mapsRefused          *prometheus.Desc
	parkedSent, redelivered, tieDropped, noPath    *prometheus.Desc
	probesSent, probesAnswered, pathSwitches       *prometheus.Desc
	discoDropped, indexAttributed, relayRx         *prometheus.Desc
	relayRxDrops                                   *prometheus.Desc
	udpRxPackets, udpTxPackets, udpRxBytes         *prometheus.Desc
	udpTxBytes, udpRxDrops, udpRxErrors, udpTxErrs *prometheus.Desc
	dnsQueries                                     *prometheus.Desc
	filterPackets, filterInvalid, filterRejects    *prometheus.Desc
	filterSpoofed, filterFlows, filterEvicted      *prometheus.Desc
	filterPolicy                                   *prometheus.Desc
	connRefused                                    *prometheus.Desc
	junk, initsUnread, keyConflicts                *prometheus.Desc
}

var _ prometheus.Collector = (*nodeCollector)(nil)

func newNodeCollector(n *Node) *nodeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &nodeCollector{
		n:               n,
		peerRx:          d("agentnet_node_peer_receive_bytes_total", "Bytes received from the peer through WireGuard (wireguard-go rx_bytes).", "peer"),
		peerTx:          d("agentnet_node_peer_transmit_bytes_total", "Bytes sent to the peer through WireGuard (wireguard-go tx_bytes).", "peer"),
		peerPath:        d("agentnet_node_peer_path_info", "The peer's current path: direct, relay or none (always 1).", "peer", "path"),
		peerHandshake:   d("agentnet_node_peer_last_handshake_seconds", "Unix time of the last completed WireGuard handshake with the peer; 0 if none.", "peer"),
		peers:           d("agentnet_node_peers", "Peers in the current network map."),
		connected:       d("agentnet_node_coordinator_connected", "1 while the netmap stream from the coordinator is up, else 0."),
		serial:          d("agentnet_node_netmap_serial", "Serial of the network map in use."),
		mapsRefused:     d("agentnet_node_netmaps_refused_total", "Network maps refused: bad signature, or not applicable to this node."),
		parkedSent:      d("agentnet_node_handshake_initiations_parked_sent_total", "Handshake initiations parked while a peer had no path, sent once the path arrived."),
		redelivered:     d("agentnet_node_handshake_initiations_redelivered_total", "Handshake initiations from a not-yet-known path delivered again once it became a peer's path."),
		tieDropped:      d("agentnet_node_handshake_initiations_tiebreak_dropped_total", "Incoming handshake initiations dropped by the simultaneous-initiation tie-break."),
		probesSent:      d("agentnet_node_path_probes_sent_total", "Disco pings sent to peers' candidate paths."),
		probesAnswered:  d("agentnet_node_path_probes_answered_total", "Disco pings answered by a pong on the path they were sent on."),
		pathSwitches:    d("agentnet_node_path_switches_total", "Changes of any peer's path (direct, relay, endpoint)."),
		discoDropped:    d("agentnet_node_disco_dropped_total", "Disco messages dropped: did not open, unknown sender, or unexpected."),
		indexAttributed: d("agentnet_node_packets_index_attributed_total", "WireGuard packets from unknown sources attributed to a peer by session index."),
		relayRx:         d("agentnet_node_relay_receive_packets_total", "Packets received through this node's relay allocation."),
		relayRxDrops:    d("agentnet_node_relay_receive_drops_total", "Packets received through the relay allocation but dropped (unknown sender, queue full)."),
		noPath:          d("agentnet_node_packets_no_path_total", "Outgoing packets dropped because the peer had no path yet."),
		udpRxPackets:    d("agentnet_node_udp_receive_packets_total", "UDP datagrams received and handed to WireGuard."),
		udpTxPackets:    d("agentnet_node_udp_transmit_packets_total", "UDP datagrams accepted by the kernel for sending."),
		udpRxBytes:      d("agentnet_node_udp_receive_bytes_total", "UDP payload bytes received and handed to WireGuard."),
		udpTxBytes:      d("agentnet_node_udp_transmit_bytes_total", "UDP payload bytes accepted by the kernel for sending."),
		udpRxDrops:      d("agentnet_node_udp_receive_drops_total", "UDP datagrams received but dropped: by the kernel before we read them (receive buffer full; Linux, current socket) or by us (truncated, unusable source, batch overflow)."),
		udpRxErrors:     d("agentnet_node_udp_receive_errors_total", "Failed UDP receive calls."),
		udpTxErrs:       d("agentnet_node_udp_transmit_errors_total", "Failed UDP send calls."),
		dnsQueries:      d("agentnet_dns_queries_total", "DNS queries answered by the node's built-in DNS servers, by result.", "result"),
		filterPackets:   d("agentnet_filter_packets_total", "Packets decided by the packet filter, by policy rule (\"default deny\": no rule allowed it), verdict (allow, deny) and direction (inbound: from peers; outbound: to peers).", "rule", "verdict", "direction"),
		filterInvalid:   d("agentnet_filter_invalid_packets_total", "Packets the filter denied before its rules: malformed, fragment, not_local (inbound, not for this node), not_unicast, foreign_source (outbound, not from this node).", "reason", "direction"),
		filterRejects:   d("agentnet_filter_rejects_total", "TCP resets and ICMP unreachables injected locally for denied outbound packets (fail fast)."),
		filterSpoofed:   d("agentnet_filter_spoofed_packets_total", "Packets WireGuard dropped because their inner source was not in the sending peer's allowed IPs."),
		filterFlows:     d("agentnet_filter_flows", "Connections tracked by the packet filter."),
		filterEvicted:   d("agentnet_filter_flows_evicted_total", "Live connections forgotten because the flow table was full."),
		filterPolicy:    d("agentnet_filter_policy_version", "Version of the policy the packet filter enforces."),
		junk:            d("agentnet_node_junk_packets_total", "Received datagrams dropped unanswered as junk, by kind: not_wireguard, wireguard_invalid (wrong size, bad MAC1), wireguard_unknown (naming none of our sessions, from an unknown source; passed to WireGuard), too_short, disco_failed.", "kind"),
		initsUnread:     d("agentnet_node_handshake_initiations_unread_total", "Handshake initiations from unknown sources not read for a lazy peer's key, by reason: rate_limited, queue_full (both still passed to WireGuard), dropped (over the rate passed to WireGuard).", "reason"),
		keyConflicts:    d("agentnet_node_key_conflict_peers_total", "Map peers ignored because their WireGuard key was another peer's or this node's."),
		connRefused:     d("agentnet_conn_refused_total", "Inbound TCP connections reset because a cap was reached: per_source (Config.MaxConnsPerPeer), total (Config.MaxConns); netstack listeners and front-ends.", "reason"),
	}
}

// Describe implements prometheus.Collector.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.peerRx, c.peerTx, c.peerPath, c.peerHandshake, c.peers, c.connected, c.serial, c.mapsRefused,
		c.parkedSent, c.redelivered, c.tieDropped, c.noPath,
		c.probesSent, c.probesAnswered, c.pathSwitches, c.discoDropped, c.indexAttributed, c.relayRx, c.relayRxDrops,
		c.udpRxPackets, c.udpTxPackets, c.udpRxBytes, c.udpTxBytes, c.udpRxDrops, c.udpRxErrors, c.udpTxErrs,
		c.dnsQueries,
		c.filterPackets, c.filterInvalid, c.filterRejects, c.filterSpoofed, c.filterFlows, c.filterEvicted, c.filterPolicy,
		c.connRefused, c.junk, c.initsUnread, c.keyConflicts,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	n := c.n
	st := n.Status()
	for _, p := range st.Peers {
		counter(c.peerRx, p.RxBytes, p.Name)
		counter(c.peerTx, p.TxBytes, p.Name)
		path := "none"
		if p.Path != nil {
			path = p.Path.Kind
		}
		gauge(c.peerPath, 1, p.Name, path)
		hs := 0.0
		if !p.LastHandshake.IsZero() {
			hs = float64(p.LastHandshake.UnixNano()) / 1e9
		}
		gauge(c.peerHandshake, hs, p.Name)
	}
	gauge(c.peers, float64(len(st.Peers)))
	connected := 0.0
	if st.Connected {
		connected = 1
	}
	gauge(c.connected, connected)
	gauge(c.serial, float64(st.MapSerial))
	counter(c.mapsRefused, st.MapsRefused)

	counter(c.parkedSent, n.pbind.parkedSent.Load())
	counter(c.redelivered, n.pbind.redelivered.Load())
	counter(c.tieDropped, n.pbind.tieDropped.Load())
	counter(c.noPath, n.pbind.noPath.Load())
	counter(c.probesSent, st.Paths.ProbesSent)
	counter(c.probesAnswered, st.Paths.ProbesAnswered)
	counter(c.pathSwitches, st.Paths.PathSwitches)
	counter(c.discoDropped, st.Paths.DiscoDropped)
	counter(c.indexAttributed, st.Paths.IndexAttributed)
	counter(c.relayRx, st.Paths.RelayRxPackets)
	counter(c.relayRxDrops, st.Paths.RelayRxDrops)

	j := st.Paths.Junk
	counter(c.junk, j.NotWireGuard, "not_wireguard")
	counter(c.junk, j.WireGuardInvalid, "wireguard_invalid")
	counter(c.junk, j.WireGuardUnknown, "wireguard_unknown")
	counter(c.junk, j.TooShort, "too_short")
	counter(c.junk, j.DiscoFailed, "disco_failed")
	counter(c.initsUnread, st.Paths.InitsUnread.RateLimited, "rate_limited")
	counter(c.initsUnread, st.Paths.InitsUnread.QueueFull, "queue_full")
	counter(c.initsUnread, st.Paths.InitsUnread.Dropped, "dropped")
	counter(c.keyConflicts, st.KeyConflictPeers)

	bs := n.bind.Stats()
	counter(c.udpRxPackets, bs.RxPackets)
	counter(c.udpTxPackets, bs.TxPackets)
	counter(c.udpRxBytes, bs.RxBytes)
	counter(c.udpTxBytes, bs.TxBytes)
	counter(c.udpRxDrops, bs.RxDrops+bs.KernelDrops)
	counter(c.udpRxErrors, bs.RxErrors)
	counter(c.udpTxErrs, bs.TxErrors)

	var answer, nodata, nxdomain, refused, forwarded, formerr, badvers, servfail, refusedSource uint64
	for _, d := range n.dns { // set by startDNS, never changed afterwards
		s := d.Stats()
		answer += s.Answer
		nodata += s.NoData
		nxdomain += s.NXDomain
		refused += s.Refused
		forwarded += s.Forwarded
		formerr += s.FormErr
		badvers += s.BadVers
		refusedSource += s.RefusedSource
		servfail += s.ServFail
	}
	counter(c.dnsQueries, answer, "answer")
	counter(c.dnsQueries, nodata, "nodata")
	counter(c.dnsQueries, nxdomain, "nxdomain")
	counter(c.dnsQueries, refused, "refused")
	counter(c.dnsQueries, forwarded, "forwarded")
	counter(c.dnsQueries, formerr, "formerr")
	counter(c.dnsQueries, servfail, "servfail")
	counter(c.dnsQueries, badvers, "badvers")
	counter(c.dnsQueries, refusedSource, "refused_source") // dropped unread: not from the overlay

	f := n.filter
	f.ctrs.each(func(dir direction, rule string, rc *ruleCounters) {
		counter(c.filterPackets, rc.allowed.Load(), rule, "allow", dir.String())
		counter(c.filterPackets, rc.denied.Load(), rule, "deny", dir.String())
	})
	for _, dir := range []direction{dirIn, dirOut} {
		counter(c.filterPackets, f.stats.defaultDenied[dir].Load()+f.stats.unmatched[dir].Load(), defaultDenyRule, "deny", dir.String())
		for reason := firstInvalid; reason < numReasons; reason++ {
			counter(c.filterInvalid, f.stats.invalid[dir][reason].Load(), reasonLabel[reason], dir.String())
		}
	}
	counter(c.filterRejects, f.stats.rejects.Load())
	counter(c.filterSpoofed, f.stats.spoofed.Load())
	gauge(c.filterFlows, float64(f.flows.len()))
	counter(c.filterEvicted, f.flows.evicted.Load())
	gauge(c.filterPolicy, float64(f.ruleSet().version))

	perSource, total := n.connRefused()
	counter(c.connRefused, perSource, "per_source")
	counter(c.connRefused, total, "total")
}

// startMetrics serves the node's metrics on Config.MetricsListen, if set.
// It runs once the device, DNS and first map are up, so every scrape sees
// a complete node.
func (n *Node) startMetrics() error {
	if n.cfg.MetricsListen == "" {
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newNodeCollector(n),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	ms, err := metricsserver.Serve(n.cfg.MetricsListen, reg, n.log)
	if err != nil {
		return fmt.Errorf("overlay: metrics on %s: %w", n.cfg.MetricsListen, err)
	}
	n.metrics = ms
	n.log.Info("serving metrics", "endpoint", ms.Addr())
	return nil
}

// MetricsAddr is where /metrics is served (Config.MetricsListen with the
// port filled in), or the zero value when metrics are off.
func (n *Node) MetricsAddr() netip.AddrPort {
	return n.metrics.Addr()
}
