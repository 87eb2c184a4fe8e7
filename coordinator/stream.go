package coordinator

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// streamWriteTimeout bounds one write to a stream; a client that stops
// reading loses its stream instead of holding a handler forever.
const streamWriteTimeout = 10 * time.Second

// stream is one node's open netmap stream.
//
// Fan-out never blocks and never queues: wake has capacity 1 and means "a
// newer map is wanted". A notification finding it full is merged into the
// pending one (counted as Coalesced); the stream then builds the latest map
// from the snapshot when it gets to it, so a slow reader skips straight to
// the newest map.
//
// Path probes (wire.MsgProbe) are not maps: each must arrive, and soon,
// so they have their own small queue (probeQueue), written between maps.
// A probe finding it full is dropped and counted (ProbesDropped); the
// node asks again.
type stream struct {
	did     string
	wake    chan struct{}
	probes  chan wire.Probe // bounded, probeQueue
	done    chan struct{}   // closed by end: replaced by a newer stream, or the node was removed
	endOnce sync.Once
	// changedAt is when the oldest change not yet written was notified
	// (nil: none); it feeds the push latency metric.
	changedAt atomic.Pointer[time.Time]
}

func (s *stream) end() { s.endOnce.Do(func() { close(s.done) }) }

// handleStream serves wire.PathStream: newline-delimited
// wire.StreamMessage, first the current signed map, then a map after
// every change and a keepalive every wire.StreamKeepalive, each flushed.
// It returns when the client goes away, the coordinator closes, the node is
// removed, or the same node opens a newer stream (one stream per node; the
// newest wins, so a reconnect never flaps the node offline).
//
// A node is Online while it has a stream. Coming online and going offline
// are changes: the serial is bumped, LastSeen is stored and peers get a map.
func (c *Coordinator) handleStream(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	self, err := c.authNode(r, body)
	if err != nil {
		return err
	}
	s := &stream{did: self.DID, wake: make(chan struct{}, 1), probes: make(chan wire.Probe, probeQueue), done: make(chan struct{})}
	c.attach(s)
	defer c.detach(s)
	if err := c.touch(self.DID); err != nil {
		return err
	}
	select {
	case <-s.wake: // the map below includes whatever woke us
	default:
	}
	since := s.changedAt.Swap(nil)
	// credExp is when the relay credentials of the last map sent expire
	// (read before the map is built: never later than the map's).
	credExp := relayExpiry(c.now())
	deltas := r.Header.Get(wire.HeaderStreamDeltas) == "1"
	var view streamView
	first, err := c.streamMessage(self.DID, &view, deltas)
	if err != nil {
		return err
	}

	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{}) // the request is fully read; the connection stays open
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(msg wire.StreamMessage) error {
		_ = rc.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout))
		if err := enc.Encode(msg); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil {
			return err
		}
		// Clear the deadline: over HTTP/2 a pending write deadline resets
		// the stream when it passes even if nothing is being written, which
		// would cut every idle stream.
		return rc.SetWriteDeadline(time.Time{})
	}
	log := c.log.With("node", self.Name)
	log.Debug("coordinator: stream open")
	if err := send(*first); err != nil {
		log.Debug("coordinator: stream write failed", "err", err)
		return nil
	}
	c.stats.mapsSent.Add(1)
	c.observePush(since)

	keepalive := time.NewTicker(c.cfg.keepalive)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done(): // client gone, or Close cancelled baseCtx
			log.Debug("coordinator: stream closed", "reason", "context")
			return nil
		case <-s.done:
			log.Debug("coordinator: stream closed", "reason", "replaced or removed")
			return nil
		case p := <-s.probes:
			if err := send(wire.StreamMessage{Type: wire.MsgProbe, Probe: &p}); err != nil {
				log.Debug("coordinator: stream write failed", "err", err)
				return nil
			}
			c.stats.probesSent.Add(1)
		case <-keepalive.C:
			if len(c.cfg.Relays) > 0 && credExp.Sub(c.now()) < relayCredRefresh {
				// Relay credentials run low: a fresh map carries new ones.
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
			if err := send(wire.StreamMessage{Type: wire.MsgKeepalive}); err != nil {
				log.Debug("coordinator: stream write failed", "err", err)
				return nil
			}
			c.stats.keepalives.Add(1)
		case <-s.wake:
			since = s.changedAt.Swap(nil) // the map built next includes every change up to now
			exp := relayExpiry(c.now())
			msg, err := c.streamMessage(self.DID, &view, deltas)
			if errors.Is(err, errNodeGone) {
				log.Debug("coordinator: stream closed", "reason", "node removed")
				return nil
			} else if err != nil {
				log.Error("coordinator: build map", "err", err)
				return nil
			}
			if msg == nil {
				credExp = exp
				continue // nothing in this node's map changed
			}
			if err := send(*msg); err != nil {
				log.Debug("coordinator: stream write failed", "err", err)
				return nil
			}
			if msg.Type == wire.MsgDelta {
				c.stats.deltasSent.Add(1)
			} else {
				c.stats.mapsSent.Add(1)
			}
			c.observePush(since)
			credExp = exp
		}
	}
}

// attach makes s the node's stream, ending an older one.
func (c *Coordinator) attach(s *stream) {
	c.mu.Lock()
	old := c.streams[s.did]
	c.streams[s.did] = s
	c.mu.Unlock()
	c.stats.streamsOpen.Add(1)
	if old != nil {
		old.end()
	}
}

// detach removes s. If it was the node's current stream the node goes
// offline: LastSeen is stored and peers are told, except while closing.
func (c *Coordinator) detach(s *stream) {
	c.mu.Lock()
	current := c.streams[s.did] == s
	if current {
		delete(c.streams, s.did)
	}
	c.mu.Unlock()
	c.stats.streamsOpen.Add(-1)
	if !current || c.baseCtx.Err() != nil {
		return
	}
	if err := c.touch(s.did); err != nil && !errors.Is(err, store.ErrClosed) {
		c.log.Error("coordinator: mark node offline", "did", s.did, "err", err)
	}
}

// touch records an online/offline flip of did: LastSeen = now and a new
// serial, then every stream is woken. A removed node is left alone.
func (c *Coordinator) touch(did string) error {
	err := c.store.Update(func(tx store.Tx) error {
		n, ok, err := tx.Node(did)
		if err != nil || !ok {
			return err
		}
		n.LastSeen = c.now()
		if err := tx.PutNode(n); err != nil {
			return err
		}
		_, err = tx.BumpSerial()
		return err
	})
	if err != nil {
		return err
	}
	c.changedSoon()
	return nil
}

// onlineDebounce is how long online/offline flips are gathered before one
// fan-out publishes them all. Each flip is a change every open stream gets
// a new map for; when many nodes connect at once (a coordinator restart, a
// fleet rolling out) one fan-out per flip made stream set-up O(N²) in map
// builds. A node's own map never waits: Online is read live when a map is
// built.
const onlineDebounce = 250 * time.Millisecond

// changedSoon publishes committed online flips within onlineDebounce: the
// first flip arms a timer, later ones ride along.
func (c *Coordinator) changedSoon() {
	c.flipMu.Lock()
	defer c.flipMu.Unlock()
	if c.flipPending {
		return
	}
	c.flipPending = true
	time.AfterFunc(onlineDebounce, func() {
		c.flipMu.Lock()
		c.flipPending = false
		c.flipMu.Unlock()
		if c.baseCtx.Err() != nil {
			return // closing: no more fan-out
		}
		if err := c.changed(); err != nil && !errors.Is(err, store.ErrClosed) {
			c.log.Error("coordinator: publish online changes", "err", err)
		}
	})
}

// kick ends the stream of did, if any, because the node is gone (revoked,
// expired or removed). The stream is taken out of the set here, so its
// handler's detach has no online flip to store: the response ends without
// waiting for a write transaction, which under load could hold it open for
// over a second after the node lost its place in every map.
func (c *Coordinator) kick(did string) {
	c.mu.Lock()
	s := c.streams[did]
	delete(c.streams, did)
	c.mu.Unlock()
	if s != nil {
		s.end()
	}
}

// notifyAll wakes every stream without blocking.
func (c *Coordinator) notifyAll() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.streams {
		s.changedAt.CompareAndSwap(nil, &now)
		select {
		case s.wake <- struct{}{}:
		default:
			c.stats.coalesced.Add(1)
		}
	}
}
