package coordinator

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/coordinator/console"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// consoleCore is the coordinator as the web console (package console) sees
// it: the console's Core, kept off Coordinator's exported methods.
type consoleCore struct{ c *Coordinator }

var _ console.Core = consoleCore{}

func (k consoleCore) Enter() bool {
	if !k.c.enter() {
		return false
	}
	k.c.stats.requests.Add(1)
	return true
}

func (k consoleCore) Leave() { k.c.leave() }

func (k consoleCore) Refused(r *http.Request, code, reason string) {
	c := k.c
	c.stats.refuse(code)
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	c.audit.RecordLimited(audit.KindRequestRefused, host, code, "path", r.URL.Path, "reason", reason)
	if c.limiter.Allow(host+"||"+code, c.now()) {
		c.log.Warn("coordinator: console request refused", "reason", reason, "path", r.URL.Path, "endpoint", r.RemoteAddr)
	} else {
		c.stats.logsSuppressed.Add(1)
	}
}

// AdminSecretOK compares SHA-256 digests in constant time, as the admin
// API does.
func (k consoleCore) AdminSecretOK(secret string) bool {
	sum := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(sum[:], k.c.adminSum[:]) == 1
}

func (k consoleCore) AllowLogin(r *http.Request) (bool, string) {
	l := k.c.limits.login
	if l == nil {
		return true, ""
	}
	if ok, wait := l.allow(sourceOf(r), k.c.now()); !ok {
		return false, retryAfter(wait)
	}
	return true, ""
}

func (k consoleCore) Serial() uint64 { return k.c.snap.Load().serial }

// Nodes returns the snapshot's nodes (sorted by name) with live Online.
func (k consoleCore) Nodes() []wire.Node {
	c := k.c
	s := c.snap.Load()
	nodes := make([]wire.Node, len(s.nodes))
	copy(nodes, s.nodes)
	c.mu.Lock()
	for i := range nodes {
		_, nodes[i].Online = c.streams[nodes[i].DID]
	}
	c.mu.Unlock()
	return nodes
}

func (k consoleCore) Tokens() ([]store.TokenRecord, error) { return k.c.listTokens() }

func (k consoleCore) CreateToken(req wire.CreateTokenRequest) (wire.CreateTokenResponse, error) {
	resp, err := k.c.createToken(req)
	return resp, asAPIError(err)
}

func (k consoleCore) RevokeToken(id string) error { return asAPIError(k.c.revokeToken(id)) }

// asAPIError turns a refusal (an *apiError below 500) into the
// *wire.APIError the console decides on; other errors pass unchanged.
func asAPIError(err error) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.status < 500 {
		return &wire.APIError{Status: ae.status, Code: ae.code, Message: ae.msg}
	}
	return err
}
