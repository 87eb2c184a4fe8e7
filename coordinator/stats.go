package coordinator

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Stats is a snapshot of the coordinator's counters.
type Stats struct {
	Requests       uint64            // requests received (refused ones included)
	Refused        map[string]uint64 // refused requests by ErrorResponse code
	Enrolled       uint64            // new nodes
	Reenrolled     uint64            // enrollments of an already known identity
	Updates        uint64            // accepted UpdateRequests
	TokensCreated  uint64
	NodesDeleted   uint64
	MapsSent       uint64            // whole maps written to streams
	DeltasSent     uint64            // map deltas written to streams
	Keepalives     uint64            // keepalives written to streams
	Coalesced      uint64            // change notifications merged into one already pending
	StreamsOpen    int64             // streams open now
	LogsSuppressed uint64            // refusal log lines rate-limited away (still counted in Refused)
	ProbesAccepted uint64            // accepted POST /v1/probe requests
	ProbesSent     uint64            // probe messages written to streams
	ProbesDropped  uint64            // probe messages not queued: stream queue full or node offline
	ConnsOpen      int               // TLS connections open now (ConnLimits)
	ConnsRefused   map[string]uint64 // connections closed at accept, every one in scope busy, by cap ("per_source", "total")
	ConnsShed      map[string]uint64 // idle connections closed to admit a new one over a cap, by cap
}

// counters are the live values behind Stats.
type counters struct {
	requests, enrolled, reenrolled, updates, tokensCreated, nodesDeleted atomic.Uint64
	mapsSent, deltasSent, keepalives, coalesced, logsSuppressed          atomic.Uint64
	streamsOpen                                                          atomic.Int64
	probesAccepted, probesSent, probesDropped                            atomic.Uint64
	connRefusedSource, connRefusedTotal, connShedSource, connShedTotal   atomic.Uint64

	mu      sync.Mutex // guards refused
	refused map[string]uint64
}

func (c *counters) refuse(code string) {
	c.mu.Lock()
	if c.refused == nil {
		c.refused = make(map[string]uint64)
	}
	c.refused[code]++
	c.mu.Unlock()
}

// Stats returns a snapshot of the counters; safe for concurrent use.
func (c *Coordinator) Stats() Stats {
	s := &c.stats
	s.mu.Lock()
	refused := maps.Clone(s.refused)
	s.mu.Unlock()
	if refused == nil {
		refused = map[string]uint64{}
	}
	return Stats{
		Requests:       s.requests.Load(),
		Refused:        refused,
		Enrolled:       s.enrolled.Load(),
		Reenrolled:     s.reenrolled.Load(),
		Updates:        s.updates.Load(),
		TokensCreated:  s.tokensCreated.Load(),
		NodesDeleted:   s.nodesDeleted.Load(),
		MapsSent:       s.mapsSent.Load(),
		DeltasSent:     s.deltasSent.Load(),
		Keepalives:     s.keepalives.Load(),
		Coalesced:      s.coalesced.Load(),
		StreamsOpen:    s.streamsOpen.Load(),
		LogsSuppressed: s.logsSuppressed.Load(),
		ProbesAccepted: s.probesAccepted.Load(),
		ProbesSent:     s.probesSent.Load(),
		ProbesDropped:  s.probesDropped.Load(),
		ConnsOpen:      c.openConns(),
		ConnsRefused:   map[string]uint64{connCapSource: s.connRefusedSource.Load(), connCapTotal: s.connRefusedTotal.Load()},
		ConnsShed:      map[string]uint64{connCapSource: s.connShedSource.Load(), connCapTotal: s.connShedTotal.Load()},
	}
}
