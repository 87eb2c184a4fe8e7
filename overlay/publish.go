package overlay

import (
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// pathsGlue connects path discovery to the node: it publishes our
// candidates (local, STUN-mapped, relayed) when they change, and carries
// probe requests to the coordinator. Its goroutines belong to the Node
// (n.wg) and end with n.ctx.
type pathsGlue struct {
	relayWake chan struct{} // map or relays changed: relayLoop re-checks
	pubWake   chan struct{} // candidates may have changed: publishLoop re-publishes
	asks      chan string   // peers to ask the coordinator a probe for; bounded
	stunNow   atomic.Bool   // a path died: relayLoop checks our mapped address now

	mu      sync.Mutex // guards the fields below; serializes publish
	lastEPs []netip.AddrPort
	lastRel []netip.AddrPort
	noProbe bool // the coordinator has no probe endpoint (404)
}

// setupPaths gives peerBind our disco key and its callbacks.
func (n *Node) setupPaths() error {
	dk, err := n.state.discoKeys()
	if err != nil {
		return err
	}
	n.paths.relayWake = make(chan struct{}, 1)
	n.paths.pubWake = make(chan struct{}, 1)
	n.paths.asks = make(chan string, 16)
	p := n.pbind
	p.disco = dk
	p.ownCands = func() []netip.AddrPort {
		return append(n.candidates(), n.relayedAddrs()...)
	}
	p.onMapped = func() { n.kickPublish(); n.kickRelay() }
	p.onPathLost = func() { n.paths.stunNow.Store(true); n.kickRelay() }
	p.askProbe = func(peer string) {
		select {
		case n.paths.asks <- peer:
		default:
		}
	}
	return nil
}

// startPaths starts the probe, relay and publish loops.
func (n *Node) startPaths() {
	n.wg.Add(3)
	go func() {
		defer n.wg.Done()
		n.pbind.probeLoop(n.ctx)
	}()
	go n.relayLoop()
	go n.publishLoop()
}

func discoPublic(st *nodeState) string {
	dk, err := st.discoKeys()
	if err != nil {
		return ""
	}
	return wire.WGKeyString(dk.pub)
}

func (n *Node) kickPublish() {
	select {
	case n.paths.pubWake <- struct{}{}:
	default:
	}
}

// candidates are the UDP addresses peers may reach us at: our local
// addresses (endpoints) and our addresses as the relays see them.
func (n *Node) candidates() []netip.AddrPort {
	out := n.endpoints()
	for _, ap := range n.pbind.mappedAddrs() {
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	if len(out) > 16 {
		out = out[:16]
	}
	return out
}

// publish reports our WireGuard key, disco key and candidates to the
// coordinator and applies the map it answers with.
func (n *Node) publish() error {
	n.paths.mu.Lock()
	defer n.paths.mu.Unlock()
	eps, rel := n.candidates(), n.relayedAddrs()
	signed, err := n.ctl.update(n.ctx, wire.UpdateRequest{WGKey: n.currentWGKey(), DiscoKey: discoPublic(n.state), Endpoints: eps, Relayed: rel})
	if err != nil {
		return err
	}
	n.paths.lastEPs, n.paths.lastRel = eps, rel
	n.onSignedMap(&signedMap{Signed: *signed})
	return nil
}

// publishLoop re-publishes when our candidates change and forwards probe
// requests to the coordinator.
func (n *Node) publishLoop() {
	defer n.wg.Done()
	t := time.NewTicker(publishEvery)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case peer := <-n.paths.asks:
			n.requestProbe(peer)
			continue
		case <-n.paths.pubWake:
		case <-t.C:
		}
		n.paths.mu.Lock()
		same := slices.Equal(n.paths.lastEPs, n.candidates()) && slices.Equal(n.paths.lastRel, n.relayedAddrs())
		n.paths.mu.Unlock()
		if same {
			continue
		}
		if err := n.publish(); err != nil && n.ctx.Err() == nil {
			n.log.Warn("could not publish endpoints; retrying", "err", err)
			time.AfterFunc(publishRetry, n.kickPublish)
		}
	}
}

// requestProbe asks the coordinator for a simultaneous probe with peer. A
// coordinator without the endpoint (404) is remembered and not asked again.
func (n *Node) requestProbe(peer string) {
	n.paths.mu.Lock()
	skip := n.paths.noProbe
	n.paths.mu.Unlock()
	if skip {
		return
	}
	err := n.ctl.probe(n.ctx, wire.ProbeRequest{Peer: peer})
	var ce *ControlError
	if errors.As(err, &ce) && (ce.Status == http.StatusNotFound || ce.Status == http.StatusMethodNotAllowed) && ce.Resp.Code == "" {
		n.paths.mu.Lock()
		n.paths.noProbe = true
		n.paths.mu.Unlock()
		n.log.Debug("coordinator has no probe endpoint; using call-me-maybe over the relay only")
		return
	}
	if err != nil {
		n.log.Debug("probe request failed", "peer", peer, "err", err)
	}
}

// onProbe handles a MsgProbe from the coordinator: probe the peer's
// candidates after DelayMS, when the peer probes ours.
func (n *Node) onProbe(pr *wire.Probe) {
	k, err := wire.ParseWGKey(pr.WGKey)
	if err != nil {
		n.log.Warn("ignoring probe message", "peer", pr.Peer, "err", err)
		return
	}
	delay := time.Duration(min(max(pr.DelayMS, 0), int(maxProbeDelay/time.Millisecond))) * time.Millisecond // clamped before scaling: no overflow
	if n.pbind.probeAt(k, pr.Endpoints, pr.Relayed, delay, pr.Generation) {
		n.log.Debug("probe scheduled by coordinator", "peer", pr.Peer, "delay", delay)
	}
}

// peerInfos turns map peers into what peerBind needs for their paths.
func peerInfos(peers []wire.Node, overlay []netip.Prefix, log *slog.Logger) []peerInfo {
	out := make([]peerInfo, 0, len(peers))
	for _, p := range peers {
		k, err := wire.ParseWGKey(p.WGKey)
		if err != nil {
			continue // peerFromNode logs it
		}
		// A candidate inside the overlay would route WireGuard into the
		// tunnel itself: never use one.
		eps := slices.DeleteFunc(slices.Clone(p.Endpoints), func(ap netip.AddrPort) bool { return inAny(overlay, ap.Addr().Unmap()) })
		pi := peerInfo{key: k, name: p.Name, endpoints: eps, relayed: p.Relayed}
		if p.DiscoKey != "" {
			if dk, err := wire.ParseWGKey(p.DiscoKey); err == nil {
				pi.disco, pi.hasDisco = dk, true
			} else {
				log.Warn("peer has a malformed disco key; using its first endpoint only", "peer", p.Name, "err", err)
			}
		}
		out = append(out, pi)
	}
	return out
}

// updateRequest is what publish sends, with WireGuard key wgKey (a key
// rotation publishes the new key with the current candidates).
func (n *Node) updateRequest(wgKey string) wire.UpdateRequest {
	n.paths.mu.Lock()
	defer n.paths.mu.Unlock()
	return wire.UpdateRequest{WGKey: wgKey, DiscoKey: discoPublic(n.state), Endpoints: n.candidates(), Relayed: n.relayedAddrs()}
}
