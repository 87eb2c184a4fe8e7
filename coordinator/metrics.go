package coordinator

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentnet/agentnet/internal/metricsserver"
)

// Prometheus metrics of the coordinator (Config.MetricsListen).
//
// Counters are the ones behind Stats, read at scrape time by a collector;
// the only live metric is the netmap push latency histogram, observed by
// each stream as it writes a map. The coordinator has its own registry:
// several coordinators may run in one process.

// metrics is the coordinator's metrics state; nil when metrics are off.
// It is set by New before the API serves and never changed afterwards.
type metrics struct {
	// pushLatency is the time from a change (enroll, update, removal,
	// online/offline flip) to each stream's write of a map that includes it.
	pushLatency prometheus.Histogram

	srv *metricsserver.Server
}

// coordCollector is a prometheus.Collector over the coordinator's
// counters and live state.
type coordCollector struct {
	c *Coordinator

	requests, refused, enrollments, updates, tokensCreated, nodesDeleted *prometheus.Desc
	pushes, deltas, keepalives, coalesced, nodes, online                 *prometheus.Desc
	connsOpen, connsRefused, connsShed                                   *prometheus.Desc
}

var _ prometheus.Collector = (*coordCollector)(nil)

func newCoordCollector(c *Coordinator) *coordCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &coordCollector{
		c:             c,
		requests:      d("agentnet_coordinator_requests_total", "API requests received, refused ones included."),
		refused:       d("agentnet_coordinator_requests_refused_total", "API requests refused, by error code.", "code"),
		enrollments:   d("agentnet_coordinator_enrollments_total", "Accepted enrollments: new nodes, or a known identity enrolling again.", "result"),
		updates:       d("agentnet_coordinator_updates_total", "Accepted node updates (endpoints, WireGuard key)."),
		tokensCreated: d("agentnet_coordinator_tokens_created_total", "Join tokens created."),
		nodesDeleted:  d("agentnet_coordinator_nodes_deleted_total", "Nodes removed by an admin."),
		pushes:        d("agentnet_coordinator_netmap_pushes_total", "Signed network maps written to node streams."),
		deltas:        d("agentnet_coordinator_netmap_deltas_total", "Signed network map deltas written to node streams (nodes that asked for deltas get one per change after their first map)."),
		keepalives:    d("agentnet_coordinator_stream_keepalives_total", "Keepalives written to node streams."),
		coalesced:     d("agentnet_coordinator_netmap_changes_coalesced_total", "Change notifications merged into one already pending for a stream."),
		nodes:         d("agentnet_coordinator_nodes", "Enrolled nodes."),
		online:        d("agentnet_coordinator_nodes_online", "Nodes with an open netmap stream."),
		connsOpen:     d("agentnet_coordinator_connections_open", "TLS connections open now."),
		connsRefused:  d("agentnet_coordinator_connections_refused_total", "Connections closed at accept because a cap was reached and every connection in its scope was busy, by cap (per_source, total).", "cap"),
		connsShed:     d("agentnet_coordinator_connections_shed_total", "Idle connections closed to admit a new one over a cap, by cap (per_source, total).", "cap"),
	}
}

// Describe implements prometheus.Collector.
func (cc *coordCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		cc.requests, cc.refused, cc.enrollments, cc.updates, cc.tokensCreated, cc.nodesDeleted,
		cc.pushes, cc.deltas, cc.keepalives, cc.coalesced, cc.nodes, cc.online,
		cc.connsOpen, cc.connsRefused, cc.connsShed,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (cc *coordCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	c := cc.c
	s := c.Stats()
	counter(cc.requests, s.Requests)
	codes := make([]string, 0, len(s.Refused))
	for code := range s.Refused {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	for _, code := range codes {
		counter(cc.refused, s.Refused[code], code)
	}
	counter(cc.enrollments, s.Enrolled, "new")
	counter(cc.enrollments, s.Reenrolled, "reenrolled")
	counter(cc.updates, s.Updates)
	counter(cc.tokensCreated, s.TokensCreated)
	counter(cc.nodesDeleted, s.NodesDeleted)
	counter(cc.pushes, s.MapsSent)
	counter(cc.deltas, s.DeltasSent)
	counter(cc.keepalives, s.Keepalives)
	counter(cc.coalesced, s.Coalesced)
	if snap := c.snap.Load(); snap != nil {
		gauge(cc.nodes, float64(len(snap.nodes)))
	}
	c.mu.Lock()
	online := len(c.streams)
	c.mu.Unlock()
	gauge(cc.online, float64(online))
	gauge(cc.connsOpen, float64(s.ConnsOpen))
	for _, cap := range []string{connCapSource, connCapTotal} {
		counter(cc.connsRefused, s.ConnsRefused[cap], cap)
		counter(cc.connsShed, s.ConnsShed[cap], cap)
	}
}

// startMetrics serves /metrics on Config.MetricsListen, if set. New calls
// it before the API serves, so c.metrics is fixed before any stream reads it.
func (c *Coordinator) startMetrics() error {
	if c.cfg.MetricsListen == "" {
		return nil
	}
	m := &metrics{
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentnet_coordinator_netmap_push_latency_seconds",
			Help:    "Time from a change (join, update, removal, online/offline flip) to a stream's write of a map that includes it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. ~4 s
		}),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCoordCollector(c),
		m.pushLatency,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	srv, err := metricsserver.Serve(c.cfg.MetricsListen, reg, c.log)
	if err != nil {
		return fmt.Errorf("coordinator: metrics listen: %w", err)
	}
	m.srv = srv
	c.metrics = m
	c.log.Info("coordinator: serving metrics", "endpoint", srv.Addr())
	return nil
}

// MetricsAddr is where /metrics is served (Config.MetricsListen with the
// port filled in), or the zero value when metrics are off.
func (c *Coordinator) MetricsAddr() netip.AddrPort {
	if c.metrics == nil {
		return netip.AddrPort{}
	}
	return c.metrics.srv.Addr()
}

// observePush records the latency of a map write covering the change
// noted at since (nil: no change pending, e.g. a repeated wake).
func (c *Coordinator) observePush(since *time.Time) {
	if c.metrics != nil && since != nil {
		c.metrics.pushLatency.Observe(time.Since(*since).Seconds())
	}
}

// stopMetrics stops the metrics listener and waits for it. No-op when
// metrics are off.
func (c *Coordinator) stopMetrics() {
	if c.metrics != nil {
		c.metrics.srv.Close()
	}
}
