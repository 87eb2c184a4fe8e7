package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// Defaults of the overlay address plan.
var (
	DefaultPrefix4 = netip.MustParsePrefix("100.96.0.0/12")
	DefaultDNSIP   = netip.MustParseAddr("100.100.100.100") // reserved, never allocated
)

// DefaultDomain is the DNS suffix of agent names.
const DefaultDomain = "agents.internal"

// Node describes one enrolled node as the coordinator publishes it.
type Node struct {
	Name      string           `json:"name"`
	DID       string           `json:"did"`    // did:key of the Ed25519 identity key
	WGKey     string           `json:"wg_key"` // WireGuard public key, base64
	IPv4      netip.Addr       `json:"ipv4"`
	IPv6      netip.Addr       `json:"ipv6"`
	Endpoints []netip.AddrPort `json:"endpoints,omitempty"` // UDP candidates the node reported: local and STUN-mapped
	Relayed   []netip.AddrPort `json:"relayed,omitempty"`   // its TURN relayed addresses
	DiscoKey  string           `json:"disco_key,omitempty"` // X25519 key sealing path probes, base64
	Tags      []string         `json:"tags,omitempty"`
	Online    bool             `json:"online"` // has a live netmap stream now
	LastSeen  time.Time        `json:"last_seen,omitzero"`
	Created   time.Time        `json:"created,omitzero"`
	Expires   time.Time        `json:"expires,omitzero"` // identity expiry (token's node TTL); zero: never
}

// Map is one node's view of the network. The coordinator builds one per node
// and signs it; the node trusts it only after Verify.
type Map struct {
	ProtocolVersion int          `json:"protocol_version"`
	Serial          uint64       `json:"serial"` // grows with every change on the coordinator
	Issued          time.Time    `json:"issued"`
	Domain          string       `json:"domain"`
	DNSIP           netip.Addr   `json:"dns_ip"`
	Prefix4         netip.Prefix `json:"prefix4"`
	Prefix6         netip.Prefix `json:"prefix6"`
	Self            Node         `json:"self"`
	Peers           []Node       `json:"peers"` // the peers Self may reach or be reached by
	Relays          []Relay      `json:"relays,omitempty"`
	Filter          *Filter      `json:"filter,omitempty"` // nil: nothing is allowed
}

// Signed is a Map as it travels and is cached: the exact JSON bytes and the
// coordinator's Ed25519 signature over them.
type Signed struct {
	Payload []byte `json:"payload"`
	Sig     []byte `json:"sig"`
}

// netmapSigContext separates netmap signatures from every other use of the
// coordinator key.
const netmapSigContext = "agentnet-netmap-v1\x00"

// Sign serialises m and signs it with the coordinator key.
func Sign(key ed25519.PrivateKey, m *Map) (*Signed, error) {
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("netmap: encode: %w", err)
	}
	return &Signed{Payload: payload, Sig: ed25519.Sign(key, append([]byte(netmapSigContext), payload...))}, nil
}

// SignPayload signs payload, the JSON encoding of a Map built by other
// means than Sign (the coordinator assembles maps from per-node encodings
// it caches), with the coordinator key.
func SignPayload(key ed25519.PrivateKey, payload []byte) *Signed {
	return &Signed{Payload: payload, Sig: ed25519.Sign(key, append([]byte(netmapSigContext), payload...))}
}

// VerifySignature reports whether s is a map signed with the coordinator
// key, without decoding it.
func VerifySignature(coordinator ed25519.PublicKey, s *Signed) bool {
	return s != nil && len(coordinator) == ed25519.PublicKeySize &&
		ed25519.Verify(coordinator, append([]byte(netmapSigContext), s.Payload...), s.Sig)
}

// Verify checks the signature with the coordinator's public key and decodes
// the map. A map that fails is never decoded.
func (s *Signed) Verify(coordinator ed25519.PublicKey) (*Map, error) {
	if s == nil || len(coordinator) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("netmap: %w: missing map or coordinator key", ErrBadSignature)
	}
	if !VerifySignature(coordinator, s) {
		return nil, fmt.Errorf("netmap: %w: network map not signed by coordinator %s", ErrBadSignature, Fingerprint(coordinator))
	}
	var m Map
	if err := json.Unmarshal(s.Payload, &m); err != nil {
		return nil, fmt.Errorf("netmap: decode signed map: %w", err)
	}
	return &m, nil
}

// Peer returns the peer with the given name, if present.
func (m *Map) Peer(name string) (Node, bool) {
	for _, p := range m.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return Node{}, false
}
