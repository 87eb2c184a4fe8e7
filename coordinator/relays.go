package coordinator

import (
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
)

// Relay credentials in maps (TURN REST scheme, see turncred.Credentials).
//
// A relay learns revocations by expiry: credentials are short-lived
// (relayCredTTL) and a relay refuses any whose expiry lies more than
// relay.DefaultMaxCredentialTTL ahead, so a revoked node's credential is
// refused at most relayCredTTL after its revocation (it gets no fresh
// map), and its allocation ends at its next refresh (RFC 8656 §7: at most
// a few minutes later). The alternative, relays polling the coordinator
// for revoked names, needs a path from every relay to the coordinator
// and a new authenticated endpoint; expiry needs neither.
//
// A credential issued at time t expires at t truncated to relayCredStep
// plus relayCredTTL, so every map built within the same step carries the
// same credential, and a node always gets at least relayCredTTL -
// relayCredStep of validity. A stream whose last map's credentials have
// less than relayCredRefresh left is sent a fresh map (checked at every
// keepalive), so a node on a quiet network never runs on expired
// credentials; a node allocates again with the fresh credential when its
// allocation's refresh is refused.
const (
	relayCredTTL     = time.Hour
	relayCredStep    = 10 * time.Minute
	relayCredRefresh = 30 * time.Minute
	// maxRelayed bounds the relayed addresses a node may publish.
	maxRelayed = 8
)

// checkRelays validates Config.Relays at start.
func checkRelays(creds []turncred.Cred) error {
	seen := make(map[string]bool)
	for i, r := range creds {
		if err := r.Check(); err != nil {
			return fmt.Errorf("coordinator: relay %d (%q): %w", i, r.Name, err)
		}
		if seen[r.Name] {
			return fmt.Errorf("coordinator: two relays are named %q; relay names must be unique (agentnet relay --name)", r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// relayExpiry is when credentials issued at now expire.
func relayExpiry(now time.Time) time.Time {
	return now.Truncate(relayCredStep).Add(relayCredTTL)
}

// relaysFor returns every configured relay with a credential for node.
func (c *Coordinator) relaysFor(node string, now time.Time) []wire.Relay {
	if len(c.cfg.Relays) == 0 {
		return nil
	}
	base := now.Truncate(relayCredStep)
	out := make([]wire.Relay, 0, len(c.cfg.Relays))
	for _, r := range c.cfg.Relays {
		out = append(out, r.Relay(node, relayCredTTL, base))
	}
	return out
}

// checkDisco validates a node's disco key (32 bytes, standard base64; empty
// means none) and its relayed addresses.
func checkDisco(disco string, relayed []netip.AddrPort) error {
	if disco != "" {
		if _, err := wire.ParseWGKey(disco); err != nil { // same X25519 encoding, canonical only
			return refuse(http.StatusBadRequest, wire.CodeBadRequest, "disco_key: %v", err)
		}
	}
	if len(relayed) > maxRelayed {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "%d relayed addresses, at most %d", len(relayed), maxRelayed)
	}
	for i, ap := range relayed {
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
			return refuse(http.StatusBadRequest, wire.CodeBadRequest, "relayed address %d (%v) is not a usable address:port", i, ap)
		}
		relayed[i] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return nil
}
