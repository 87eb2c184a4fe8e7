package overlay

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// WireGuard key rotation. Every Config.KeyRotation (and on demand through
// RotateKey, the local API and `agentnet node rotate`) the node replaces its
// X25519 key:
//
//  1. The new key is made and written to the state file as WGNext, so a
//     crash from here on resumes with it (loadState promotes it).
//  2. peerBind starts holding initiations (beginRekey) and wireguard-go's
//     device switches to the new private key. Its sessions' send keys
//     expire; packets peers send on the old sessions still decrypt until
//     they replace this node.
//  3. POST /v1/update with the new key. The coordinator retires the old key
//     (never accepted again) and pushes maps with the new key; every peer's
//     wgDiff replaces this node's peer entry, and the peer whose key is
//     larger initiates at once.
//  4. The key becomes WGPrivate in the state file, keepalive roles are
//     recomputed for the new key, and after rekeySettle (peers have applied
//     their maps by then) the held initiations are sent (endRekey).
//
// Initiations are held because one sent before a peer knows the new key is
// dropped by that peer, and wireguard-go would only retry after
// REKEY_TIMEOUT (5 s). While held they count for peerBind's tie-break, so a
// peer's colliding initiation is resolved exactly as usual. Established TCP
// connections see a gap of about rekeySettle plus a handshake; their
// retransmissions cover it.
//
// If the update fails the device goes back to the old key and the new one is
// discarded; a refusal is returned to the caller and the periodic rotation
// tries again after rotateRetry.

// DefaultKeyRotation is Config.KeyRotation's default.
const DefaultKeyRotation = 24 * time.Hour

// RotateKey replaces the node's WireGuard key now (see above) and returns
// the short fingerprints of the old and new public keys.
func (n *Node) RotateKey(ctx context.Context) (oldFP, newFP string, err error) {
	n.rotMu.Lock()
	defer n.rotMu.Unlock()
	n.mu.Lock()
	refused, oldPriv, oldPub := n.refused, n.state.WGPrivate, n.wgPub
	n.mu.Unlock()
	if refused != nil {
		return "", "", fmt.Errorf("overlay: cannot rotate: the coordinator refused this node (%s)", refused.Code)
	}
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("overlay: rotate: new key: %w", err)
	}
	var newPub [32]byte
	copy(newPub[:], k.PublicKey().Bytes())
	oldFP, newFP = wire.Fingerprint(oldPub[:]), wire.Fingerprint(newPub[:])
	log := n.log.With("old", oldFP, "new", newFP)

	n.mu.Lock()
	n.state.WGNext = k.Bytes()
	err = saveState(n.cfg.StateDir, n.state)
	n.mu.Unlock()
	if err != nil {
		return oldFP, newFP, fmt.Errorf("overlay: rotate: save state: %w", err)
	}

	n.pbind.beginRekey(newPub)
	if err := n.dev.IpcSet("private_key=" + hex.EncodeToString(k.Bytes()) + "\n"); err != nil {
		n.abortRotation(oldPriv, oldPub)
		return oldFP, newFP, fmt.Errorf("overlay: rotate: set wireguard key: %w", err)
	}
	if err := n.lazy.setKey([32]byte(k.Bytes())); err != nil {
		n.log.Error("rotate: initiations to the new key cannot be read", "err", err)
	}
	signed, err := n.ctl.update(ctx, n.updateRequest(wire.WGKeyString(newPub)))
	if err != nil {
		n.abortRotation(oldPriv, oldPub)
		log.Warn("key rotation failed; keeping the old key", "err", err)
		return oldFP, newFP, fmt.Errorf("overlay: rotate: coordinator update: %w", err)
	}

	// The keepalives change with our key (keepaliveFor). mapMu first (lock
	// order rotMu, mapMu, mu): a map application between its diff and its
	// IpcSet would otherwise put back keepalives of the old key after ours.
	// As in applyMap, the IpcSet runs under mapMu, not mu.
	n.mapMu.Lock()
	n.mu.Lock()
	n.state.WGPrivate, n.state.WGNext, n.state.WGRotated = k.Bytes(), nil, n.now()
	err = saveState(n.cfg.StateDir, n.state)
	n.wgPub = newPub
	peers := make(map[[32]byte]wgPeer, len(n.peers))
	for key, p := range n.peers {
		p.keepalive = keepaliveFor(newPub, key)
		peers[key] = p
	}
	active := make(map[[32]byte]wgPeer, len(n.active))
	for key := range n.active {
		active[key] = peers[key]
	}
	diff := wgDiff(n.active, active)
	n.peers, n.active = peers, active
	n.mu.Unlock()
	if diff != "" {
		if err := n.dev.IpcSet(diff); err != nil {
			log.Error("rotate: reconfigure keepalives", "err", err)
		}
	}
	n.mapMu.Unlock()
	if err != nil {
		log.Error("rotate: could not save the new key; a restart resumes with it from wg_next", "err", err)
	}
	n.onSignedMap(&signedMap{Signed: *signed})
	if !sleepCtx(n.ctx, rekeySettle) {
		n.pbind.endRekey(false)
		return oldFP, newFP, nil
	}
	n.pbind.endRekey(true)
	log.Info("rotated WireGuard key")
	return oldFP, newFP, nil
}

// abortRotation returns the device to the old key after a failed rotation.
func (n *Node) abortRotation(oldPriv []byte, oldPub [32]byte) {
	n.pbind.beginRekey(oldPub)
	if err := n.dev.IpcSet("private_key=" + hex.EncodeToString(oldPriv) + "\n"); err != nil {
		n.log.Error("rotate: could not restore the old wireguard key", "err", err)
	}
	// Cannot fail: the key was in use a moment ago.
	_ = n.lazy.setKey([32]byte(oldPriv))
	n.pbind.endRekey(false) // held initiations used the discarded key
	n.mu.Lock()
	n.state.WGNext = nil
	if err := saveState(n.cfg.StateDir, n.state); err != nil {
		n.log.Error("rotate: save state", "err", err)
	}
	n.mu.Unlock()
}

// currentWGKey is the WireGuard public key in use, as the coordinator
// knows it.
func (n *Node) currentWGKey() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return wire.WGKeyString(n.wgPub)
}

// startRotation runs periodic rotation unless Config.KeyRotation < 0.
func (n *Node) startRotation() {
	every := n.cfg.KeyRotation
	if every < 0 {
		return
	}
	n.mu.Lock()
	due := n.state.WGRotated.Add(every)
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			if !sleepCtx(n.ctx, max(due.Sub(n.now()), 0)) {
				return
			}
			if n.Refused() != nil {
				return
			}
			ctx, cancel := context.WithTimeout(n.ctx, rotateTimeout)
			_, _, err := n.RotateKey(ctx)
			cancel()
			if err != nil {
				due = n.now().Add(min(rotateRetry, every))
				continue
			}
			due = n.now().Add(every)
		}
	}()
}

// beginRekey makes self our key for the tie-break and probing, forgets
// initiations sent or parked under the old key, and holds every initiation
// until endRekey.
func (p *peerBind) beginRekey(self [32]byte) {
	p.setSelf(self)
	p.guard.beginRekey(self)
}

// endRekey stops holding initiations and, if send, sends the held ones.
func (p *peerBind) endRekey(send bool) {
	p.guard.endRekey(send)
	if send {
		p.flush()
	}
}

// RotateResult is the local API's answer to a rotation.
type RotateResult struct {
	Old string `json:"old"` // fingerprint of the retired WireGuard public key
	New string `json:"new"` // fingerprint of the key now in use
}

// handleRotate serves POST /v1/rotate on the local API.
func (n *Node) handleRotate(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), rotateTimeout)
	defer cancel()
	oldFP, newFP, err := n.RotateKey(ctx)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, RotateResult{Old: oldFP, New: newFP})
}

// Rotate asks the node to rotate its WireGuard key now.
func (c *LocalClient) Rotate(ctx context.Context) (RotateResult, error) {
	var res RotateResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agentnet/v1/rotate", nil)
	if err != nil {
		return res, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return res, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return res, fmt.Errorf("rotate: %s", e.Error)
		}
		return res, fmt.Errorf("rotate: local API: HTTP %d", resp.StatusCode)
	}
	return res, json.Unmarshal(b, &res)
}
