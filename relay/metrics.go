package relay

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector reading Stats at scrape time, so
// the data path does no extra work for metrics. Register it in a registry
// of the caller's (the relay keeps no global one).
func (s *Server) Collector() prometheus.Collector { return relayCollector{s} }

type relayCollector struct{ s *Server }

var (
	descAllocs      = prometheus.NewDesc("agentnet_relay_allocations", "Live TURN allocations.", nil, nil)
	descAllocsTotal = prometheus.NewDesc("agentnet_relay_allocations_total", "TURN allocations made since start.", nil, nil)
	descRefused     = prometheus.NewDesc("agentnet_relay_refused_total", "Requests and packets refused, by reason.", []string{"reason"}, nil)
	descBytes       = prometheus.NewDesc("agentnet_relay_bytes_total", "Bytes relayed, by direction (to_peers, from_peers).", []string{"direction"}, nil)
	descSTUNAlt     = prometheus.NewDesc("agentnet_relay_stun_alt_answered_total", "STUN binding requests answered on the STUN alt port.", nil, nil)
)

func (relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAllocs, descAllocsTotal, descRefused, descBytes, descSTUNAlt} {
		ch <- d
	}
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(descAllocs, prometheus.GaugeValue, float64(st.Allocations))
	ch <- prometheus.MustNewConstMetric(descAllocsTotal, prometheus.CounterValue, float64(st.AllocationsTotal))
	reasons := make([]string, 0, len(st.Refused))
	for r := range st.Refused {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(st.Refused[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesToPeers), "to_peers")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesFromPeers), "from_peers")
	ch <- prometheus.MustNewConstMetric(descSTUNAlt, prometheus.CounterValue, float64(st.STUNAltAnswered))
}
