package overlay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// Node reports: security events the node sends to the coordinator's audit
// log (wire.PathReport) in batches: packet denials from the filter, and
// channel up/down per peer (first WireGuard handshake; the peer left the
// map or its session expired). Events wait in a bounded queue; when it is
// full the oldest is dropped and counted, and the count travels with the
// next report. Denials of one flow key are merged into one event with a
// count, so a flood costs one map lookup per packet and no memory.

// Denial is one packet the node's filter dropped. The filter's deny
// callback hands each one to Node.addDenial.
type Denial struct {
	Dir    string         // "in" (received from Peer) or "out" (sent towards it)
	Proto  string         // "tcp", "udp", "icmp", …
	Src    netip.AddrPort // packet source (port 0 for ICMP)
	Dst    netip.AddrPort // packet destination
	Peer   string         // the peer's name, when known
	Rule   string         // the rule that decided, "default-deny" when none matched
	Reason string         // optional detail
}

// denialKey merges denials within a batch: the source port is left out, so
// a scan from many source ports stays one event per target.
type denialKey struct {
	dir, proto, peer, rule, reason string
	src                            netip.Addr
	dst                            netip.AddrPort
}

func keyOf(e *wire.ReportEvent) denialKey {
	return denialKey{e.Dir, e.Proto, e.Peer, e.Rule, e.Reason, e.Src.Addr(), e.Dst}
}

// reporter owns the event queue. Its loop runs in the Node's wait group.
type reporter struct {
	n        *Node
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time // the node's clock

	mu      sync.Mutex // guards the fields below
	queue   []wire.ReportEvent
	base    uint64               // absolute index of queue[0]
	denials map[denialKey]uint64 // absolute index of a queued denial, for merging
	dropped uint64               // events dropped since the last accepted report
	lost    uint64               // events dropped, all time
	sent    uint64               // events accepted by the coordinator, all time

	up map[[32]byte]string // peers whose channel is up → name; loop-owned
}

func newReporter(n *Node, interval time.Duration) *reporter {
	if interval == 0 {
		interval = defaultReportInterval
	}
	now := n.now
	if now == nil {
		now = time.Now
	}
	return &reporter{n: n, log: n.log, interval: interval, now: now, denials: make(map[denialKey]uint64), up: make(map[[32]byte]string)}
}

// addDenial queues a filter denial. Safe for concurrent use from the data
// path: it never blocks on the network. A nil reporter (reports off) does
// nothing.
func (r *reporter) addDenial(d Denial, now time.Time) {
	if r == nil {
		return
	}
	e := wire.ReportEvent{Time: now.UTC(), Kind: wire.ReportDenial, Peer: d.Peer, Dir: d.Dir, Proto: d.Proto,
		Src: d.Src, Dst: d.Dst, Rule: d.Rule, Reason: d.Reason, Count: 1}
	k := keyOf(&e)
	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.denials[k]; ok && i >= r.base {
		r.queue[i-r.base].Count++
		return
	}
	r.denials[k] = r.base + uint64(len(r.queue))
	r.pushLocked(e)
}

// add queues any event.
func (r *reporter) add(e wire.ReportEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pushLocked(e)
}

func (r *reporter) pushLocked(e wire.ReportEvent) {
	for len(r.queue) >= reportQueue {
		r.dropOldestLocked()
	}
	r.queue = append(r.queue, e)
}

func (r *reporter) dropOldestLocked() {
	old := &r.queue[0]
	if old.Kind == wire.ReportDenial {
		if i, ok := r.denials[keyOf(old)]; ok && i == r.base {
			delete(r.denials, keyOf(old))
		}
	}
	r.queue = r.queue[1:]
	r.base++
	r.dropped++
	r.lost++
}

// take removes up to wire.MaxReportEvents events from the queue for a
// report; later denials of the same key start new events.
func (r *reporter) take() wire.ReportRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := min(len(r.queue), wire.MaxReportEvents)
	req := wire.ReportRequest{Events: make([]wire.ReportEvent, k), Dropped: r.dropped}
	copy(req.Events, r.queue)
	for i := range req.Events {
		if req.Events[i].Kind == wire.ReportDenial {
			if j, ok := r.denials[keyOf(&req.Events[i])]; ok && j == r.base+uint64(i) {
				delete(r.denials, keyOf(&req.Events[i]))
			}
		}
	}
	r.queue = append([]wire.ReportEvent(nil), r.queue[k:]...)
	r.base += uint64(k)
	r.dropped = 0
	return req
}

// putBack returns a report that was not accepted to the front of the
// queue (as far as there is room; the rest counts as dropped).
func (r *reporter) putBack(req wire.ReportRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropped += req.Dropped
	room := max(0, reportQueue-len(r.queue))
	if n := len(req.Events); n > room {
		r.dropped += uint64(n - room)
		r.lost += uint64(n - room)
		req.Events = req.Events[n-room:]
	}
	// Denials put back are not merged again; the index stays valid by
	// moving base back over them.
	r.queue = append(append([]wire.ReportEvent(nil), req.Events...), r.queue...)
	r.base -= uint64(len(req.Events))
}

// loop watches channels and sends reports every interval until the node
// closes. Events still queued at Close are not sent.
func (r *reporter) loop(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.watchChannels(r.now())
		for {
			r.mu.Lock()
			empty := len(r.queue) == 0 && r.dropped == 0
			r.mu.Unlock()
			if empty {
				break
			}
			req := r.take()
			err := r.n.ctl.report(ctx, req)
			if err == nil {
				r.mu.Lock()
				r.sent += uint64(len(req.Events))
				r.mu.Unlock()
				continue
			}
			var ce *ControlError
			if errors.As(err, &ce) && ce.Permanent() {
				r.mu.Lock()
				r.dropped += uint64(len(req.Events))
				r.lost += uint64(len(req.Events))
				r.mu.Unlock()
				r.log.Warn("coordinator refused a security report; its events are dropped", "err", err, "events", len(req.Events))
			} else {
				r.putBack(req)
				r.log.Debug("security report not sent; retrying later", "err", err)
			}
			break
		}
	}
}

// watchChannels turns WireGuard handshake times and map changes into
// channel_up / channel_down events.
func (r *reporter) watchChannels(now time.Time) {
	n := r.n
	n.mu.Lock()
	if n.nm == nil || n.closed {
		n.mu.Unlock()
		return
	}
	names := make(map[[32]byte]string, len(n.nm.Peers))
	for _, p := range n.nm.Peers {
		if k, err := wire.ParseWGKey(p.WGKey); err == nil {
			names[k] = p.Name
		}
	}
	n.mu.Unlock()
	s, err := n.dev.IpcGet()
	if err != nil {
		return
	}
	stats := parseWGStats(s)
	for k, name := range r.up {
		st := stats[k]
		switch _, inMap := names[k]; {
		case !inMap:
			r.add(wire.ReportEvent{Time: now.UTC(), Kind: wire.ReportChannelDown, Peer: name, Reason: "removed from map"})
		case st == nil || st.LastHandshake.IsZero() || now.Sub(st.LastHandshake) > sessionExpired:
			r.add(wire.ReportEvent{Time: now.UTC(), Kind: wire.ReportChannelDown, Peer: name, Reason: "session expired"})
		default:
			continue
		}
		delete(r.up, k)
	}
	for k, name := range names {
		st := stats[k]
		if _, up := r.up[k]; up || st == nil || st.LastHandshake.IsZero() || now.Sub(st.LastHandshake) > sessionExpired {
			continue
		}
		r.up[k] = name
		r.add(wire.ReportEvent{Time: st.LastHandshake.UTC(), Kind: wire.ReportChannelUp, Peer: name, Reason: "handshake"})
	}
}

// report sends one batch of events (node-signed); the answer is 204.
func (c *controlClient) report(ctx context.Context, req wire.ReportRequest) error {
	hr, err := c.newRequest(ctx, http.MethodPost, wire.PathReport, req)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkResponse(resp); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<10))
	return nil
}

// addDenial is the filter's entry point: it queues one dropped packet for
// the next security report. Safe for concurrent use; never blocks.
func (n *Node) addDenial(d Denial) { n.reports.addDenial(d, n.reports.now()) }

// ReportStats counts security-report events: sent (accepted by the
// coordinator), lost (dropped on a full queue or refused) and queued.
type ReportStats struct {
	Sent, Lost uint64
	Queued     int
}

// ReportStats returns the security-report counters (zero when reports are
// off).
func (n *Node) ReportStats() ReportStats {
	r := n.reports
	if r == nil {
		return ReportStats{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return ReportStats{Sent: r.sent, Lost: r.lost, Queued: len(r.queue)}
}

// onFilterDeny hands one packet-filter denial to the audit reporter (which
// merges repeats) and to Config.OnFilterDeny. It runs on the data path.
func (n *Node) onFilterDeny(d FilterDenial) {
	if n.reports != nil {
		dir := "in"
		if d.Direction == "outbound" {
			dir = "out"
		}
		rule := d.Rule
		if rule == "default deny" {
			rule = "default-deny"
		}
		n.reports.addDenial(Denial{Dir: dir, Proto: protoName(d.Proto), Src: netip.AddrPortFrom(d.Src, 0),
			Dst: netip.AddrPortFrom(d.Dst, d.Port), Rule: rule, Reason: d.Reason}, d.Time)
	}
	if f := n.cfg.OnFilterDeny; f != nil {
		f(d)
	}
}
