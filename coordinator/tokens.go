package coordinator

import (
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/coordinator/policy"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// Token limits.
const (
	maxTags = 32
	maxTTL  = 10 * 365 * 24 * time.Hour
)

// handleCreateToken issues a join token. Only the hash of its secret is
// stored; the token string is returned once.
func (c *Coordinator) handleCreateToken(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req wire.CreateTokenRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	resp, err := c.createToken(req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// createToken validates req, stores the new token's record and returns the
// token string (the only time it exists outside the caller).
func (c *Coordinator) createToken(req wire.CreateTokenRequest) (wire.CreateTokenResponse, error) {
	if len(req.Tags) > maxTags {
		return wire.CreateTokenResponse{}, refuse(http.StatusBadRequest, wire.CodeBadRequest, "%d tags, at most %d", len(req.Tags), maxTags)
	}
	for _, t := range req.Tags {
		if !policy.ValidTag(t) {
			return wire.CreateTokenResponse{}, refuse(http.StatusBadRequest, wire.CodeBadRequest, "tag %.70q is not \"tag:\" followed by lowercase letters, digits and '-'", t)
		}
	}
	ttl := c.cfg.DefaultTokenTTL
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(maxTTL/time.Second) {
		return wire.CreateTokenResponse{}, refuse(http.StatusBadRequest, wire.CodeBadRequest, "ttl_seconds %d is not between 0 and %d", req.TTLSeconds, int64(maxTTL/time.Second))
	}
	if req.TTLSeconds > 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	if req.NodeTTLSeconds < 0 || req.NodeTTLSeconds > int64(maxTTL/time.Second) {
		return wire.CreateTokenResponse{}, refuse(http.StatusBadRequest, wire.CodeBadRequest, "node_ttl_seconds %d is not between 0 and %d", req.NodeTTLSeconds, int64(maxTTL/time.Second))
	}
	now := c.now()
	secret := wire.NewSecret()
	rec := store.TokenRecord{
		ID:         wire.NewID(),
		SecretHash: wire.HashSecret(secret),
		Tags:       slices.Compact(slices.Sorted(slices.Values(req.Tags))),
		Reusable:   req.Reusable,
		Created:    now,
		Expires:    now.Add(ttl),
		NodeTTL:    time.Duration(req.NodeTTLSeconds) * time.Second,
	}
	if err := c.store.Update(func(tx store.Tx) error { return tx.PutToken(rec) }); err != nil {
		return wire.CreateTokenResponse{}, err
	}
	c.stats.tokensCreated.Add(1)
	c.log.Info("coordinator: token created", "token", rec.ID, "tags", rec.Tags, "reusable", rec.Reusable, "expires", rec.Expires, "node_ttl", rec.NodeTTL)
	c.audit.Record(audit.KindTokenCreate, "actor", "admin", "subject", rec.ID, "tags", rec.Tags, "reusable", rec.Reusable, "expires", rec.Expires)
	tok := wire.Token{URL: c.url, Pin: c.pin, ID: rec.ID, Secret: secret}
	return wire.CreateTokenResponse{Token: tok.String(), ID: rec.ID, Expires: rec.Expires}, nil
}

// listTokens returns every token record, newest first.
func (c *Coordinator) listTokens() ([]store.TokenRecord, error) {
	var recs []store.TokenRecord
	err := c.store.View(func(tx store.Tx) (err error) {
		recs, err = tx.Tokens()
		return err
	})
	slices.SortFunc(recs, func(a, b store.TokenRecord) int {
		if d := b.Created.Compare(a.Created); d != 0 {
			return d
		}
		return strings.Compare(a.ID, b.ID)
	})
	return recs, err
}

// revokeToken marks token id revoked: later enrollments with it are
// refused with wire.CodeTokenRevoked. Nodes already enrolled with it stay and
// keep working (a token is only used once, at enrollment); to cut one of
// them off, revoke the node (revoke.go).
// Revoking twice is not an error.
func (c *Coordinator) revokeToken(id string) error {
	err := c.store.Update(func(tx store.Tx) error {
		rec, ok, err := tx.Token(id)
		if err != nil {
			return err
		}
		if !ok {
			return refuse(http.StatusNotFound, wire.CodeNotFound, "no join token %.20q", id)
		}
		rec.Revoked = true
		return tx.PutToken(rec)
	})
	if err == nil {
		c.log.Info("coordinator: token revoked", "token", id)
		c.audit.Record(audit.KindTokenRevoke, "actor", "admin", "subject", id)
	}
	return err
}

// redeemToken checks a parsed token inside the enrollment transaction and
// marks it used. The transaction only commits if the whole enrollment does,
// so a refused enrollment never consumes a token.
func redeemToken(tx store.Tx, tok wire.Token, did string, now time.Time) (store.TokenRecord, error) {
	rec, ok, err := tx.Token(tok.ID)
	if err != nil {
		return rec, err
	}
	if !ok || subtle.ConstantTimeCompare([]byte(rec.SecretHash), []byte(wire.HashSecret(tok.Secret))) != 1 {
		return rec, refuse(http.StatusUnauthorized, wire.CodeBadToken, "join token %s is not known to this coordinator; create one with 'agentnet token create'", tok.ID)
	}
	if rec.Revoked {
		return rec, refuse(http.StatusUnauthorized, wire.CodeTokenRevoked, "join token %s was revoked by an admin; create a new one", rec.ID)
	}
	if !now.Before(rec.Expires) {
		return rec, refuse(http.StatusUnauthorized, wire.CodeTokenExpired, "join token %s expired at %s; create a new one", rec.ID, rec.Expires.UTC().Format(time.RFC3339))
	}
	if rec.Used && !rec.Reusable {
		return rec, refuse(http.StatusUnauthorized, wire.CodeTokenUsed, "join token %s is one-use and was already used; create a new one (or a --reusable one)", rec.ID)
	}
	rec.Used = true
	rec.Uses++
	rec.LastUsedBy = did
	return rec, tx.PutToken(rec)
}

// handleListTokens serves GET wire.PathAdminTokens: every token, newest
// first, without secrets.
func (c *Coordinator) handleListTokens(w http.ResponseWriter, r *http.Request) error {
	recs, err := c.listTokens()
	if err != nil {
		return err
	}
	out := make([]wire.TokenInfo, 0, len(recs))
	for _, t := range recs {
		ti := wire.TokenInfo{ID: t.ID, Tags: t.Tags, Reusable: t.Reusable, Created: t.Created, Expires: t.Expires, Uses: t.Uses, Revoked: t.Revoked}
		if t.NodeTTL > 0 {
			ti.NodeTTL = t.NodeTTL.String()
		}
		out = append(out, ti)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleRevokeToken serves DELETE wire.PathAdminTokens/{id}: later
// enrollments with the token are refused; nodes it enrolled stay.
func (c *Coordinator) handleRevokeToken(w http.ResponseWriter, r *http.Request) error {
	if err := c.revokeToken(r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
