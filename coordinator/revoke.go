package coordinator

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// The node lifecycle: revocation by an admin, identity expiry (expiry.go)
// and WireGuard key rotation.
//
// A revoked or expired identity leaves the node set in one transaction: its
// record moves to the revocations bucket (with every WireGuard key it ever
// used), its name and addresses are freed, and the serial is bumped, so
// every peer's next map lacks it. From then on:
//   - its requests are refused with wire.CodeNodeRevoked or
//     wire.CodeNodeExpired (authNode, handleEnroll), even with a valid
//     join token: an identity never comes back;
//   - its WireGuard keys are refused in every enrollment and update, from
//     any identity (wire.CodeKeyRetired), as are keys a node rotated away.
//
// Revoking a join token (tokens.go) only stops new enrollments with it:
// nodes it already enrolled are unaffected unless revoked themselves.

// maxReasonLen bounds an admin's revocation reason.
const maxReasonLen = 256

// handleRevokeNode serves POST /v1/admin/nodes/{name}/revoke: the node's
// stream is ended at once and every peer gets a map without it.
func (c *Coordinator) handleRevokeNode(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req wire.RevokeRequest
	if len(body) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return err
		}
	}
	if len(req.Reason) > maxReasonLen {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "reason is %d bytes, at most %d", len(req.Reason), maxReasonLen)
	}
	rec, err := c.revokeNode(r.PathValue("name"), req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}

// revokeNode revokes the node called name and pushes the change.
func (c *Coordinator) revokeNode(name, reason string) (wire.Revocation, error) {
	var rec wire.Revocation
	err := c.store.Update(func(tx store.Tx) error {
		did, ok, err := tx.NameOwner(name)
		if err != nil {
			return err
		}
		if !ok {
			return refuse(http.StatusNotFound, wire.CodeNotFound, "no node named %q", name)
		}
		n, ok, err := tx.Node(did)
		if err != nil {
			return err
		}
		if !ok {
			return refuse(http.StatusNotFound, wire.CodeNotFound, "no node named %q", name)
		}
		rec, err = retireNode(tx, n, wire.StateRevoked, reason, c.now())
		return err
	})
	if err != nil {
		return rec, err
	}
	c.stats.nodesDeleted.Add(1)
	c.kick(rec.Node.DID)
	c.log.Warn("coordinator: node revoked", "node", rec.Node.Name, "did", rec.Node.DID, "reason", reason, "wg_keys", len(rec.WGKeys))
	c.event(eventRevoke, slog.String("node", rec.Node.Name), slog.String("did", rec.Node.DID),
		slog.String("reason", reason), slog.Int("wg_keys", len(rec.WGKeys)))
	return rec, c.changed()
}

// retireNode moves n out of the node set for good (state StateRevoked or
// StateExpired) inside tx: the revocation record is stored, every key it
// used is marked with state, the node and its indexes are deleted and the
// serial is bumped.
func retireNode(tx store.Tx, n wire.Node, state, reason string, now time.Time) (wire.Revocation, error) {
	rec := wire.Revocation{Node: n, State: state, Reason: reason, At: now}
	rec.Node.Online = false
	old, err := tx.RetiredKeysOf(n.DID)
	if err != nil {
		return rec, err
	}
	keys := []store.RetiredKey{{Key: n.WGKey, DID: n.DID, Name: n.Name}}
	keys = append(keys, old...)
	for _, k := range keys {
		k.State, k.At = state, now
		if err := tx.PutRetiredKey(k); err != nil {
			return rec, err
		}
		rec.WGKeys = append(rec.WGKeys, k.Key)
	}
	if err := tx.PutRevocation(rec); err != nil {
		return rec, err
	}
	if err := tx.DeleteNode(n.DID); err != nil {
		return rec, err
	}
	_, err = tx.BumpSerial()
	return rec, err
}

// refuseGone is the refusal for a signed request from did, which is not in
// the node set: revoked, expired, or never enrolled (or removed).
func (c *Coordinator) refuseGone(tx store.Tx, did string) error {
	rec, ok, err := tx.Revocation(did)
	if err != nil {
		return err
	}
	if !ok {
		return errNotEnrolled()
	}
	return refuseRevoked(rec)
}

func refuseRevoked(rec wire.Revocation) *apiError {
	if rec.State == wire.StateExpired {
		return refuse(http.StatusForbidden, wire.CodeNodeExpired,
			"node %s: its identity expired at %s (the join token's node TTL) and was dropped from the network; "+
				"re-enroll with a new join token and a new state dir: agentnet node --token TOKEN --state NEWDIR",
			rec.Node.Name, rec.Node.Expires.UTC().Format(time.RFC3339))
	}
	why := ""
	if rec.Reason != "" {
		why = " (reason: " + rec.Reason + ")"
	}
	return refuse(http.StatusForbidden, wire.CodeNodeRevoked,
		"node %s was revoked by an admin at %s%s; this identity can never rejoin: "+
			"re-enroll with a new identity and a new join token: agentnet node --token TOKEN --state NEWDIR",
		rec.Node.Name, rec.At.UTC().Format(time.RFC3339), why)
}

// checkWGKeyUsable refuses a WireGuard key that was retired or revoked,
// whoever offers it, and a key another identity holds or ever held (one
// key, one node, ever: a node keeps one peer per key, so a second node
// publishing a key takes its traffic; issue 17, item 1). It runs inside
// the store transaction that then writes the key, which is what makes the
// check race-free (and PutNode refuses a bound key again, so a write path
// that forgot the check still cannot share a key). It reports nothing to
// the audit hook; the caller passes the refusal to c.refused after the
// transaction.
func (c *Coordinator) checkWGKeyUsable(tx store.Tx, did, wgKey string) error {
	k, ok, err := tx.RetiredKey(wgKey)
	if err != nil {
		return err
	}
	if ok {
		return refuse(http.StatusForbidden, wire.CodeKeyRetired,
			"WireGuard key %s was %s at %s and is never accepted again; the node must use a fresh key (agentnet node rotate, or a new state dir)",
			wgFingerprint(wgKey), k.State, k.At.UTC().Format(time.RFC3339))
	}
	raw, err := wire.ParseWGKey(wgKey)
	if err != nil {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "%v", err)
	}
	owner, ok, err := tx.WGKeyOwner(raw)
	if err != nil || !ok || owner == did {
		return err
	}
	return errKeyInUse(wgKey)
}

func errKeyInUse(wgKey string) *apiError {
	return refuse(http.StatusConflict, wire.CodeKeyInUse,
		"WireGuard key %s belongs to another node identity; a key is bound to one node, ever: "+
			"the node must use a fresh key of its own (agentnet node rotate, or a new state dir)", wgFingerprint(wgKey))
}

// keyInUse turns the store's ErrKeyInUse into the API refusal.
func keyInUse(err error, wgKey string) error {
	if errors.Is(err, store.ErrKeyInUse) {
		return errKeyInUse(wgKey).with(err)
	}
	return err
}

// bindWGKey sets n's WireGuard key to newKey inside tx, retiring the old
// one. It reports whether the key changed.
func bindWGKey(tx store.Tx, n *wire.Node, newKey string, now time.Time) (bool, error) {
	if n.WGKey == newKey {
		return false, nil
	}
	if n.WGKey != "" {
		if err := tx.PutRetiredKey(store.RetiredKey{Key: n.WGKey, DID: n.DID, Name: n.Name, State: store.KeyStateRetired, At: now}); err != nil {
			return false, err
		}
	}
	n.WGKey = newKey
	return true, nil
}

// rotated reports a committed key change.
func (c *Coordinator) rotated(n wire.Node, oldKey string) {
	c.log.Info("coordinator: WireGuard key rotated", "node", n.Name, "old", wgFingerprint(oldKey), "new", wgFingerprint(n.WGKey))
	c.event(eventRotate, slog.String("node", n.Name), slog.String("did", n.DID),
		slog.String("old", wgFingerprint(oldKey)), slog.String("new", wgFingerprint(n.WGKey)))
}

// refused reports a lifecycle refusal to the audit hook (other errors are
// ignored). Call it outside any store transaction.
func (c *Coordinator) refused(did string, r *http.Request, err error) {
	ae, ok := err.(*apiError)
	if !ok {
		return
	}
	switch ae.code {
	case wire.CodeNodeRevoked, wire.CodeNodeExpired:
		c.event(eventRefused, slog.String("did", did), slog.String("reason", ae.code), slog.String("path", r.URL.Path))
	case wire.CodeKeyRetired, wire.CodeKeyInUse:
		c.event(eventKeyRefused, slog.String("did", did), slog.String("reason", ae.code), slog.String("path", r.URL.Path), slog.String("err", ae.msg))
	}
}
