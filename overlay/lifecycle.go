package overlay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	agentdns "github.com/agentnet/agentnet/dns"
	"github.com/agentnet/agentnet/wire"
)

// The node side of the identity lifecycle. When the coordinator refuses the
// node with wire.CodeNodeRevoked or wire.CodeNodeExpired, retrying can
// never help: the node logs one Error, tears its peers down (WireGuard peers
// removed, DNS left with its own name only, cached map deleted), records
// the refusal in its state file so it never starts again from that state,
// and stops: every background loop ends (no update, probe or report is
// sent after), Done is closed and Err wraps ErrRevoked or ErrExpired. The
// owner then calls Close, which removes a kernel TUN device; `agentnet node`
// does so and exits non-zero.

// Sentinels for a node the coordinator refused for good (Node.Err, and New
// on a state dir that records such a refusal).
var (
	ErrRevoked = errors.New("node revoked by the coordinator")
	ErrExpired = errors.New("node identity expired")
)

// refusalSentinel maps a lifecycle refusal code to its sentinel.
func refusalSentinel(code string) error {
	if code == wire.CodeNodeExpired {
		return ErrExpired
	}
	return ErrRevoked
}

// refusedError is what New returns for a state dir whose identity the
// coordinator revoked or expired.
func refusedError(dir string, r *wire.ErrorResponse) error {
	return fmt.Errorf("overlay: the identity in %s was refused for good by the coordinator (%w, %s): %s; "+
		"re-enroll with a new join token and a new state dir (agentnet node --token TOKEN --state NEWDIR)",
		dir, refusalSentinel(r.Code), r.Code, r.Error)
}

// stoppedError is Node.Err after a refusal while running.
func stoppedError(r *wire.ErrorResponse) error {
	return fmt.Errorf("overlay: stopped: %w (%s): %s; "+
		"re-enroll with a new join token and a new state dir (agentnet node --token TOKEN --state NEWDIR)",
		refusalSentinel(r.Code), r.Code, r.Error)
}

// Done is closed when the node stops: on its own, when the coordinator
// revoked or expired it (Err says so), or by Close. The owner of a node
// stopped on its own must still call Close to release its device and
// sockets.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns why the node stopped on its own: an error wrapping
// ErrRevoked or ErrExpired. It is nil while the node runs and after a plain
// Close.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.refused == nil {
		return nil
	}
	return stoppedError(n.refused)
}

// stop ends the node's background loops and closes Done; Close and refuse
// call it. Idempotent.
func (n *Node) stop() {
	n.cancel()
	n.doneOnce.Do(func() { close(n.done) })
}

// refusalCode returns the coordinator's refusal code in err, if any.
func refusalCode(err error) (*ControlError, string) {
	var ce *ControlError
	if errors.As(err, &ce) {
		return ce, ce.Resp.Code
	}
	return nil, ""
}

// onRefusal handles a lifecycle refusal from the control loop. It reports
// whether the node must stop following the coordinator.
func (n *Node) onRefusal(err error) bool {
	ce, code := refusalCode(err)
	switch code {
	case wire.CodeNodeRevoked, wire.CodeNodeExpired:
		n.refuse(ce.Resp)
		return true
	case wire.CodeKeyRetired:
		// Our key was retired: a state restored from a backup, or an
		// update with the old key that crossed a rotation. In the
		// second case the rotation already fixed it.
		if !n.rotMu.TryLock() {
			return false // a rotation is under way
		}
		n.mu.Lock()
		recent := n.now().Sub(n.state.WGRotated) < rotateTimeout
		n.mu.Unlock()
		n.rotMu.Unlock()
		if recent {
			return false
		}
		n.log.Warn("coordinator refused this node's WireGuard key as retired; rotating to a new key", "reason", code)
		ctx, cancel := context.WithTimeout(n.ctx, rotateTimeout)
		defer cancel()
		if _, _, err := n.RotateKey(ctx); err != nil {
			n.log.Error("key rotation after a retired-key refusal failed", "err", err)
		}
	}
	return false
}

// refuse puts the node in the refused state (see the top of this file).
// Like applyMap it holds mapMu throughout and does its UAPI and disk I/O
// outside mu.
func (n *Node) refuse(r wire.ErrorResponse) {
	n.mapMu.Lock()
	defer n.mapMu.Unlock()
	n.mu.Lock()
	if n.refused != nil || n.closed {
		n.mu.Unlock()
		return
	}
	n.refused = &r
	n.log.Error("coordinator refused this node for good; dropping all peers and stopping",
		"reason", r.Code, "err", r.Error)
	diff := wgDiff(n.active, nil)
	n.peers, n.active = map[[32]byte]wgPeer{}, map[[32]byte]wgPeer{}
	n.lazy.setPeers(nil, nil)
	n.pbind.setPeers(nil)
	n.mu.Unlock()

	if diff != "" {
		if err := n.dev.IpcSet(diff); err != nil {
			n.log.Error("could not remove wireguard peers", "err", err)
		}
	}
	if err := os.Remove(filepath.Join(n.cfg.StateDir, mapFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		n.log.Warn("could not delete the cached network map", "err", err)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nm != nil {
		m := *n.nm
		m.Peers = nil
		n.nm = &m
		for _, d := range n.dns {
			d.SetRecords([]agentdns.Record{{Name: m.Self.Name, IPv4: m.Self.IPv4, IPv6: m.Self.IPv6}})
		}
	}
	if n.mapWait != nil {
		close(n.mapWait)
	}
	n.mapWait = make(chan struct{})
	n.state.Refused = &r // n.state is guarded by mu; rotate.go saves it under mu too
	if err := saveState(n.cfg.StateDir, n.state); err != nil {
		n.log.Error("could not record the refusal in the node state", "err", err)
	}
	// Last: nothing leaves the node from here on (the reporter, publisher,
	// prober and relay loops all end with n.ctx).
	n.stop()
}

// Refused returns the coordinator's refusal when it revoked or expired this
// node (nil while the node is in good standing).
func (n *Node) Refused() *wire.ErrorResponse {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.refused
}

// WaitMap blocks until the map in force satisfies cond (checked at once,
// then after every map is applied) and returns it, or until ctx ends. It
// is how tests and embedders observe propagation (a peer gone, a new key).
func (n *Node) WaitMap(ctx context.Context, cond func(*wire.Map) bool) (*wire.Map, error) {
	for {
		n.mu.Lock()
		m, wait := n.nm, n.mapWait
		n.mu.Unlock()
		if m != nil && cond(m) {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("overlay: waiting for a network map: %w", ctx.Err())
		case <-wait:
		}
	}
}
