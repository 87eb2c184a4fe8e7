package coordinator

import (
	"net/http"
	"slices"

	"github.com/agentnet/agentnet/overlay/netmap"
)

// authNode authenticates a node-signed request (netmap.VerifyRequest over
// body) and returns the enrolled node it comes from.
func (c *Coordinator) authNode(r *http.Request, body []byte) (netmap.Node, error) {
	did, _, err := netmap.VerifyRequest(r, body, c.now())
	if err != nil {
		return netmap.Node{}, refuse(http.StatusUnauthorized, netmap.CodeUnauthorized, "%v", err)
	}
	var n netmap.Node
	var ok bool
	if err := c.store.View(func(tx Tx) (err error) {
		n, ok, err = tx.Node(did)
		return err
	}); err != nil {
		return n, err
	}
	if !ok {
		return n, errNotEnrolled()
	}
	return n, nil
}

func errNotEnrolled() error {
	return refuse(http.StatusUnauthorized, netmap.CodeUnauthorized, "node not enrolled; join with a token")
}

// handleUpdate stores a node's new WireGuard key and endpoints, pushes the
// change to every stream and answers with the caller's signed map. An
// update that changes nothing bumps nothing.
func (c *Coordinator) handleUpdate(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	self, err := c.authNode(r, body)
	if err != nil {
		return err
	}
	var req netmap.UpdateRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if err := checkWGAndEndpoints(req.WGKey, req.Endpoints); err != nil {
		return err
	}
	if err := checkDisco(req.DiscoKey, req.Relayed); err != nil {
		return err
	}
	changed := false
	err = c.store.Update(func(tx Tx) error {
		n, ok, err := tx.Node(self.DID)
		if err != nil {
			return err
		}
		if !ok {
			return errNotEnrolled() // removed since authNode
		}
		if n.WGKey == req.WGKey && slices.Equal(n.Endpoints, req.Endpoints) && n.DiscoKey == req.DiscoKey && slices.Equal(n.Relayed, req.Relayed) {
			return nil
		}
		changed = true
		n.WGKey, n.Endpoints, n.LastSeen = req.WGKey, req.Endpoints, c.now()
		n.DiscoKey, n.Relayed = req.DiscoKey, req.Relayed
		if err := tx.PutNode(n); err != nil {
			return err
		}
		_, err = tx.BumpSerial()
		return err
	})
	if err != nil {
		return err
	}
	c.stats.updates.Add(1)
	if changed {
		c.log.Info("coordinator: node updated", "node", self.Name, "endpoints", len(req.Endpoints), "wg", wgFingerprint(req.WGKey))
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
	k, err := netmap.ParseWGKey(s)
	if err != nil {
		return "invalid"
	}
	return netmap.Fingerprint(k[:])
}
