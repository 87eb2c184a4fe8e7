package coordinator

import (
	"errors"
	"net/http"
	"net/netip"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// maxEndpoints bounds the endpoints a node may publish.
const maxEndpoints = 16

// validName reports whether name is a DNS label as agent names must be:
// 1–63 of [a-z0-9-], not starting or ending with '-' (RFC 1123 §2.1,
// lowercase only so names compare byte-wise).
func validName(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for _, r := range []byte(name) {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// handleEnroll enrolls a node. The request is signed by the identity key it
// enrolls (wire.VerifyRequest), which proves possession of the key named
// by HeaderNode.
//
// A known identity re-enrolls without a token (any token sent is ignored):
// it keeps its name, IPv4 and IPv6, and only its WireGuard key and
// endpoints are updated. If it asks for a different name, the stored name
// is kept and returned in the response; renaming is an admin operation.
//
// A new identity needs a valid join token. Redeeming the token, claiming
// the name, allocating the addresses and storing the node happen in one
// transaction, so any refusal leaves the store (and the token) untouched.
func (c *Coordinator) handleEnroll(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	auth, err := wire.VerifyRequest(r, body, c.now())
	if err != nil {
		return refuse(http.StatusUnauthorized, wire.CodeUnauthorized, "%v", err)
	}
	did := auth.DID
	// An enrollment is accepted once. A refused one is forgotten again: it
	// changed nothing, and strangers (any key signs an enrollment) must not
	// fill the replay cache.
	if err := c.replay.claim(auth, c.now()); err != nil {
		return err
	}
	enrolled := false
	defer func() {
		if !enrolled {
			c.replay.release(auth)
		}
	}()
	req, err := parseEnrollRequest(body)
	if err != nil {
		return err
	}
	if err := checkDisco(req.DiscoKey, nil); err != nil {
		return err
	}
	now := c.now()
	var (
		node    wire.Node
		known   bool
		tokenID string
		oldKey  string
		rotated bool
	)
	err = c.store.Update(func(tx store.Tx) error {
		// A revoked or expired identity never comes back, token or not.
		if rec, gone, err := tx.Revocation(did); err != nil {
			return err
		} else if gone {
			return refuseRevoked(rec)
		}
		n, ok, err := tx.Node(did)
		if err != nil {
			return err
		}
		if !ok || n.WGKey != req.WGKey {
			if err := c.checkWGKeyUsable(tx, did, req.WGKey); err != nil {
				return err
			}
		}
		if ok && expired(n, now) {
			return errExpireFirst
		}
		if ok {
			known = true
			oldKey = n.WGKey
			if rotated, err = bindWGKey(tx, &n, req.WGKey, now); err != nil {
				return err
			}
			n.LastSeen = now
			if req.DiscoKey != "" {
				n.DiscoKey = req.DiscoKey
			}
			if len(req.Endpoints) > 0 { // nodes publish endpoints once up (see mapFor)
				n.Endpoints = req.Endpoints
			}
			node = n
			if err := tx.PutNode(n); err != nil {
				return keyInUse(err, req.WGKey)
			}
			_, err = tx.BumpSerial()
			return err
		}
		tok, err := wire.ParseToken(req.Token)
		if err != nil {
			return refuse(http.StatusBadRequest, wire.CodeBadToken, "%v", err)
		}
		if !validName(req.Name) {
			return refuse(http.StatusBadRequest, wire.CodeBadRequest,
				"name %.70q is not a DNS label: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'", req.Name)
		}
		rec, err := redeemToken(tx, tok, did, now)
		if err != nil {
			return err
		}
		tokenID = rec.ID
		if _, taken, err := tx.NameOwner(req.Name); err != nil {
			return err
		} else if taken {
			return refuse(http.StatusConflict, wire.CodeNameTaken,
				"name %q is already taken by another node identity; choose another name (or remove that node with 'agentnet node rm %s')", req.Name, req.Name)
		}
		v4, v6, err := allocate(tx, c.prefix4, c.ula)
		if errors.Is(err, ErrNoAddresses) {
			return refuse(http.StatusServiceUnavailable, codeNoAddresses, "no free overlay address left in %v; remove unused nodes", c.prefix4).with(err)
		} else if err != nil {
			return err
		}
		node = wire.Node{
			Name:      req.Name,
			DID:       did,
			WGKey:     req.WGKey,
			IPv4:      v4,
			IPv6:      v6,
			Endpoints: req.Endpoints,
			DiscoKey:  req.DiscoKey,
			Tags:      rec.Tags,
			LastSeen:  now,
			Created:   now,
		}
		if rec.NodeTTL > 0 {
			node.Expires = now.Add(rec.NodeTTL)
		}
		if err := tx.PutNode(node); err != nil {
			return keyInUse(err, req.WGKey)
		}
		_, err = tx.BumpSerial()
		return err
	})
	if err == errExpireFirst {
		err = c.expire(did)
	}
	if err != nil {
		c.refused(did, r, err)
		return err
	}
	if rotated {
		c.rotated(node, oldKey)
	}
	if known {
		c.stats.reenrolled.Add(1)
		c.log.Info("coordinator: node re-enrolled", "node", node.Name, "did", did, "asked_name", req.Name)
		c.audit.Record(audit.KindEnroll, "actor", did, "actor_name", node.Name, "remote", r.RemoteAddr, "subject", node.Name, "reenroll", true)
	} else {
		c.stats.enrolled.Add(1)
		c.log.Info("coordinator: node enrolled", "node", node.Name, "did", did, "token", tokenID, "ipv4", node.IPv4, "ipv6", node.IPv6)
		c.audit.Record(audit.KindTokenUse, "actor", did, "actor_name", node.Name, "remote", r.RemoteAddr, "subject", tokenID)
		c.audit.Record(audit.KindEnroll, "actor", did, "actor_name", node.Name, "remote", r.RemoteAddr, "subject", node.Name, "token", tokenID, "ipv4", node.IPv4, "ipv6", node.IPv6, "tags", node.Tags)
	}
	enrolled = true
	if err := c.changed(); err != nil {
		return err
	}
	signed, self, err := c.mapFor(did)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wire.EnrollResponse{Node: self, CoordinatorKey: c.PublicKey(), Map: signed})
	return nil
}

// parseEnrollRequest decodes an enrollment body strictly (one JSON object,
// no unknown fields) and checks what does not depend on the store: protocol
// version, WireGuard key and endpoints (normalised in place). The token and
// name are checked in the transaction, only for a new identity.
func parseEnrollRequest(body []byte) (wire.EnrollRequest, error) {
	var req wire.EnrollRequest
	if err := decodeStrict(body, &req); err != nil {
		return req, err
	}
	if req.ProtocolVersion != 0 {
		if err := wire.CheckVersion("node", req.ProtocolVersion); err != nil {
			return req, refuse(http.StatusBadRequest, wire.CodeVersion, "%v", err)
		}
	}
	if err := checkWGAndEndpoints(req.WGKey, req.Endpoints); err != nil {
		return req, err
	}
	return req, nil
}

// checkWGAndEndpoints validates what a node reports about its data plane.
func checkWGAndEndpoints(wgKey string, eps []netip.AddrPort) error {
	if _, err := wire.ParseWGKey(wgKey); err != nil {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "%v", err)
	}
	if len(eps) > maxEndpoints {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "%d endpoints, at most %d", len(eps), maxEndpoints)
	}
	for i, ep := range eps {
		// Unmap before checking: ::ffff:0.0.0.0 is 0.0.0.0 (found by
		// FuzzEnrollRequest). A zone means nothing to another host.
		a := ep.Addr().Unmap()
		if !ep.IsValid() || ep.Port() == 0 || a.IsUnspecified() || a.Zone() != "" {
			return refuse(http.StatusBadRequest, wire.CodeBadRequest, "endpoint %d (%v) is not a usable address:port", i, ep)
		}
		eps[i] = netip.AddrPortFrom(a, ep.Port())
	}
	return nil
}
