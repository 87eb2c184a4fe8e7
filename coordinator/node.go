package coordinator

import (
	"net/http"
	"slices"

	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// authNode authenticates a node-signed request (wire.VerifyRequest over
// body), refuses a replayed one (replay.go) and returns the enrolled node
// it comes from.
func (c *Coordinator) authNode(r *http.Request, body []byte) (wire.Node, error) {
	auth, err := wire.VerifyRequest(r, body, c.now())
	if err != nil {
		return wire.Node{}, refuse(http.StatusUnauthorized, wire.CodeUnauthorized, "%v", err)
	}
	did := auth.DID
	var n wire.Node
	if err := c.store.View(func(tx store.Tx) error {
		var ok bool
		var err error
		if n, ok, err = tx.Node(did); err != nil {
			return err
		}
		if !ok {
			return c.refuseGone(tx, did) // revoked, expired or not enrolled
		}
		return nil
	}); err != nil {
		c.refused(did, r, err)
		return n, err
	}
	if expired(n, c.now()) {
		err := c.expire(n.DID)
		c.refused(did, r, err)
		return n, err
	}
	// Only now, for an enrolled node: strangers take no cache entries.
	if err := c.replay.claim(auth, c.now()); err != nil {
		return n, err
	}
	return n, nil
}

// nodeRequest reads a node-signed request, authenticates it (authNode) and
// decodes its body strictly into req.
func (c *Coordinator) nodeRequest(w http.ResponseWriter, r *http.Request, req any) (wire.Node, error) {
	body, err := readBody(w, r)
	if err != nil {
		return wire.Node{}, err
	}
	self, err := c.authNode(r, body)
	if err != nil {
		return wire.Node{}, err
	}
	if err := decodeStrict(body, req); err != nil {
		return wire.Node{}, err
	}
	return self, nil
}

func errNotEnrolled() error {
	return refuse(http.StatusUnauthorized, wire.CodeUnauthorized, "node not enrolled; join with a token")
}

// handleUpdate stores a node's new WireGuard key and endpoints, pushes the
// change to every stream and answers with the caller's signed map. An
// update that changes nothing bumps nothing.
func (c *Coordinator) handleUpdate(w http.ResponseWriter, r *http.Request) error {
	var req wire.UpdateRequest
	self, err := c.nodeRequest(w, r, &req)
	if err != nil {
		return err
	}
	if err := checkWGAndEndpoints(req.WGKey, req.Endpoints); err != nil {
		return err
	}
	if err := checkDisco(req.DiscoKey, req.Relayed); err != nil {
		return err
	}
	changed := false
	var rotated bool
	var updated wire.Node
	err = c.store.Update(func(tx store.Tx) error {
		n, ok, err := tx.Node(self.DID)
		if err != nil {
			return err
		}
		if !ok {
			return c.refuseGone(tx, self.DID) // removed or revoked since authNode
		}
		disco := n.DiscoKey
		if req.DiscoKey != "" {
			disco = req.DiscoKey
		}
		if n.WGKey == req.WGKey && slices.Equal(n.Endpoints, req.Endpoints) &&
			n.DiscoKey == disco && slices.Equal(n.Relayed, req.Relayed) {
			return nil
		}
		if n.WGKey != req.WGKey {
			if err := c.checkWGKeyUsable(tx, self.DID, req.WGKey); err != nil {
				return err
			}
		}
		changed = true
		if rotated, err = bindWGKey(tx, &n, req.WGKey, c.now()); err != nil {
			return err
		}
		n.Endpoints, n.LastSeen = req.Endpoints, c.now()
		n.DiscoKey, n.Relayed = disco, req.Relayed
		updated = n
		if err := tx.PutNode(n); err != nil {
			return keyInUse(err, req.WGKey)
		}
		_, err = tx.BumpSerial()
		return err
	})
	if err != nil {
		c.refused(self.DID, r, err)
		return err
	}
	c.stats.updates.Add(1)
	if rotated {
		c.rotated(updated, self.WGKey)
	}
	if changed {
		c.log.Info("coordinator: node updated", "node", self.Name, "endpoints", len(req.Endpoints), "relayed", len(req.Relayed), "wg", wgFingerprint(req.WGKey))
		if err := c.changed(); err != nil {
			return err
		}
	}
	signed, _, err := c.mapFor(self.DID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, signed)
	return nil
}

func wgFingerprint(s string) string {
	k, err := wire.ParseWGKey(s)
	if err != nil {
		return "invalid"
	}
	return wire.Fingerprint(k[:])
}
