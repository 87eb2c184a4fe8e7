package coordinator

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/agentnet/agentnet/wire"
)

// Path probes (wire.PathProbe): a node asks the coordinator to have a
// peer probe paths towards it now. Both receive a MsgProbe with the other's
// current endpoints and relayed addresses and the same delay, so their
// first probes cross in flight and open both NATs (hole punching).
const (
	// probeDelay is the DelayMS both sides get: long enough for both
	// streams to deliver the message.
	probeDelay = 200
	// probeQueue bounds the probes waiting on one stream.
	probeQueue = 8
	// probeRate and probeBurst limit probe requests per node.
	probeRate  = 10
	probeBurst = 10
	// maxProbeLimiters bounds the limiter map; when full it starts over.
	maxProbeLimiters = 4096
)

// probeLimiter keeps one token bucket per node and the probe generation.
type probeLimiter struct {
	gen atomic.Uint64

	mu   sync.Mutex // guards byID
	byID map[string]*rate.Limiter
}

func (l *probeLimiter) allow(did string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.byID[did]
	if lim == nil {
		if l.byID == nil || len(l.byID) >= maxProbeLimiters {
			l.byID = make(map[string]*rate.Limiter)
		}
		lim = rate.NewLimiter(probeRate, probeBurst)
		l.byID[did] = lim
	}
	return lim.AllowN(now, 1)
}

// handleProbe serves wire.PathProbe: body wire.ProbeRequest, node
// signed; answers 204 once both probe messages are queued (or dropped and
// counted when a side has no stream or a full queue).
func (c *Coordinator) handleProbe(w http.ResponseWriter, r *http.Request) error {
	var req wire.ProbeRequest
	self, err := c.nodeRequest(w, r, &req)
	if err != nil {
		return err
	}
	if !c.probes.allow(self.DID, c.now()) {
		return refuse(http.StatusTooManyRequests, wire.CodeRateLimited, "more than %d probe requests per second; slow down", probeRate)
	}
	if req.Peer == self.Name {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "cannot probe yourself")
	}
	var me, peer wire.Node
	var foundMe, foundPeer bool
	var meIdx, peerIdx int
	snap := c.snap.Load()
	for i, n := range snap.nodes {
		switch n.Name {
		case self.Name:
			me, foundMe, meIdx = n, true, i
		case req.Peer:
			peer, foundPeer, peerIdx = n, true, i
		}
	}
	// A peer the policy keeps out of the caller's map is as unknown as a
	// missing one: probing must not reveal it or its endpoints.
	if foundMe && foundPeer && !snap.index(c).Reachable(meIdx).Has(peerIdx) {
		foundPeer = false
	}
	if !foundPeer {
		return refuse(http.StatusNotFound, wire.CodeNotFound, "no peer named %.70q; check the name in 'agentnet status'", req.Peer)
	}
	if !foundMe {
		return errNotEnrolled()
	}
	gen := c.probes.gen.Add(1)
	c.stats.probesAccepted.Add(1)
	c.pushProbe(me.DID, probeAbout(peer, gen))
	c.pushProbe(peer.DID, probeAbout(me, gen))
	c.log.Debug("coordinator: probe", "node", me.Name, "peer", peer.Name, "generation", gen)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func probeAbout(n wire.Node, gen uint64) wire.Probe {
	return wire.Probe{
		Peer: n.Name, WGKey: n.WGKey, Endpoints: n.Endpoints, Relayed: n.Relayed,
		DelayMS: probeDelay, Generation: gen,
	}
}

// pushProbe queues p on did's stream without blocking.
func (c *Coordinator) pushProbe(did string, p wire.Probe) {
	c.mu.Lock()
	s := c.streams[did]
	c.mu.Unlock()
	if s == nil {
		c.stats.probesDropped.Add(1)
		return
	}
	select {
	case s.probes <- p:
	default:
		c.stats.probesDropped.Add(1)
	}
}
