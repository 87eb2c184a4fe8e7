package coordinator

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/internal/atomicfile"
	"github.com/agentnet/agentnet/wire"
)

// initAdminCred keeps the admin secret across restarts. The store holds
// only its SHA-256; the secret lives in admin.cred. If admin.cred is gone
// (or no longer matches), a new secret is made: deleting admin.cred and
// restarting rotates the admin secret. The file is rewritten only when its
// contents change (new URL or new secret).
func (c *Coordinator) initAdminCred() error {
	old, loadErr := wire.LoadAdminCred(c.credPath)
	return c.store.Update(func(tx store.Tx) error {
		stored, err := tx.Meta(metaAdminSum)
		if err != nil {
			return err
		}
		secret := ""
		if loadErr == nil {
			sum := sha256.Sum256([]byte(old.Secret))
			if stored == nil || string(stored) == hex.EncodeToString(sum[:]) {
				secret = old.Secret
			}
		}
		if secret == "" {
			if stored != nil {
				c.log.Warn("coordinator: admin.cred missing or not matching; issuing a new admin secret", "path", c.credPath)
			}
			secret = wire.NewSecret()
		}
		c.adminSum = sha256.Sum256([]byte(secret))
		if err := tx.PutMeta(metaAdminSum, []byte(hex.EncodeToString(c.adminSum[:]))); err != nil {
			return err
		}
		c.cred = wire.AdminCred{URL: c.url, Pin: c.pin, Secret: secret}
		if loadErr == nil && old == c.cred {
			return nil
		}
		b, _ := json.MarshalIndent(c.cred, "", "  ")
		return atomicfile.Write(c.credPath, append(b, '\n'), 0o600)
	})
}

// admin wraps a handler with the admin bearer check, behind the per-source
// Admin rate limit (so the secret cannot be guessed at line rate). The
// comparison is of SHA-256 digests in constant time, so neither the secret
// nor its length leaks through timing.
func (c *Coordinator) admin(h handlerFunc) handlerFunc {
	return c.limited(c.limits.admin, "admin", func(w http.ResponseWriter, r *http.Request) error {
		got, ok := strings.CutPrefix(r.Header.Get(wire.HeaderAdmin), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], c.adminSum[:]) != 1 {
			c.audit.RecordLimited(audit.KindAdminLogin, remoteHost(r), "api_auth_failed", "result", "failure", "via", "api", "path", r.URL.Path)
			return refuse(http.StatusUnauthorized, wire.CodeUnauthorized, "admin secret missing or wrong; use the secret in %s", fileCred)
		}
		return h(w, r)
	})
}

// handleNodes lists every node, sorted by name, with live Online state.
func (c *Coordinator) handleNodes(w http.ResponseWriter, r *http.Request) error {
	var nodes []wire.Node
	if err := c.store.View(func(tx store.Tx) (err error) {
		nodes, err = tx.Nodes()
		return err
	}); err != nil {
		return err
	}
	c.mu.Lock()
	for i := range nodes {
		_, nodes[i].Online = c.streams[nodes[i].DID]
	}
	c.mu.Unlock()
	slices.SortFunc(nodes, func(a, b wire.Node) int { return strings.Compare(a.Name, b.Name) })
	if nodes == nil {
		nodes = []wire.Node{}
	}
	writeJSON(w, http.StatusOK, nodes)
	return nil
}

// handleDeleteNode removes a node: its name and addresses are freed (the
// sequential IPAM reuses an address only after the pool wraps), every other
// node gets a new map without it, and its own stream is ended.
func (c *Coordinator) handleDeleteNode(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var did string
	err := c.store.Update(func(tx store.Tx) error {
		owner, ok, err := tx.NameOwner(name)
		if err != nil {
			return err
		}
		if !ok {
			return refuse(http.StatusNotFound, wire.CodeNotFound, "no node named %q", name)
		}
		did = owner
		if err := tx.DeleteNode(did); err != nil {
			return err
		}
		_, err = tx.BumpSerial()
		return err
	})
	if err != nil {
		return err
	}
	c.stats.nodesDeleted.Add(1)
	c.log.Info("coordinator: node removed", "node", name, "did", did)
	c.audit.Record(audit.KindNodeRevoke, "actor", "admin", "remote", r.RemoteAddr, "subject", name, "did", did, "reason", "deleted by admin")
	c.kick(did)
	if err := c.changed(); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
