package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// HeaderStreamDeltas on a PathStream request ("1") asks the coordinator to
// follow the first map with deltas (MsgDelta) instead of whole maps. A
// coordinator that does not know it sends whole maps, which a node always
// accepts.
const HeaderStreamDeltas = "Agentnet-Stream-Deltas"

// MsgDelta is a StreamMessage carrying a signed Delta.
const MsgDelta = "delta"

// ErrDeltaBase means a delta does not apply to the map the node holds (it
// was built on another serial); the node reopens its stream for a whole
// map.
var ErrDeltaBase = errors.New("netmap delta does not apply to the current map")

// Delta is the change from one map of a netmap stream to the next: the
// coordinator sends it instead of the whole map once the stream has sent
// one, so a change costs every node the size of the change, not of the
// network. Applied with Map.Apply to the map with serial Base it gives the
// map with serial Serial. Fields left out are unchanged.
type Delta struct {
	ProtocolVersion int       `json:"protocol_version"`
	Base            uint64    `json:"base"`   // serial of the map it applies to
	Serial          uint64    `json:"serial"` // serial of the map it makes
	Issued          time.Time `json:"issued"`
	Self            *Node     `json:"self,omitempty"`
	Upsert          []Node    `json:"upsert,omitempty"` // peers added or changed, whole; keyed by DID
	Remove          []string  `json:"remove,omitempty"` // DIDs of peers no longer listed
	Relays          *[]Relay  `json:"relays,omitempty"` // the whole relay list, when it changed
	Filter          *Filter   `json:"filter,omitempty"` // the whole filter, when it changed
}

// deltaSigContext separates delta signatures from maps and every other use
// of the coordinator key: a delta can never pass for a map.
const deltaSigContext = "agentnet-netmap-delta-v1\x00"

// SignDeltaPayload signs payload, the JSON encoding of a Delta, with the
// coordinator key.
func SignDeltaPayload(key ed25519.PrivateKey, payload []byte) *Signed {
	return &Signed{Payload: payload, Sig: ed25519.Sign(key, append([]byte(deltaSigContext), payload...))}
}

// VerifyDelta checks a signed delta with the coordinator's public key and
// decodes it. A delta that fails is never decoded.
func (s *Signed) VerifyDelta(coordinator ed25519.PublicKey) (*Delta, error) {
	if s == nil || len(coordinator) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("netmap: %w: missing delta or coordinator key", ErrBadSignature)
	}
	if !ed25519.Verify(coordinator, append([]byte(deltaSigContext), s.Payload...), s.Sig) {
		return nil, fmt.Errorf("netmap: %w: network map delta not signed by coordinator %s", ErrBadSignature, Fingerprint(coordinator))
	}
	var d Delta
	if err := json.Unmarshal(s.Payload, &d); err != nil {
		return nil, fmt.Errorf("netmap: decode signed delta: %w", err)
	}
	return &d, nil
}

// Apply returns the map d makes of m; m is not modified (the result shares
// unchanged peers' slices with it). Peers stay sorted by name. A delta
// for another base serial, one that goes back in serial, or one that
// changes Self's identity is refused.
func (m *Map) Apply(d *Delta) (*Map, error) {
	if d.Base != m.Serial {
		return nil, fmt.Errorf("%w: delta from serial %d, map at %d", ErrDeltaBase, d.Base, m.Serial)
	}
	if d.Serial < d.Base {
		return nil, fmt.Errorf("netmap: delta goes back from serial %d to %d", d.Base, d.Serial)
	}
	out := *m
	out.Serial, out.Issued = d.Serial, d.Issued
	if d.Self != nil {
		if d.Self.DID != m.Self.DID {
			return nil, fmt.Errorf("netmap: delta changes this node's identity from %s to %s", m.Self.DID, d.Self.DID)
		}
		out.Self = *d.Self
	}
	if d.Relays != nil {
		out.Relays = *d.Relays
	}
	if d.Filter != nil {
		out.Filter = d.Filter
	}
	if len(d.Upsert) == 0 && len(d.Remove) == 0 {
		return &out, nil
	}
	drop := make(map[string]bool, len(d.Remove)+len(d.Upsert))
	for _, did := range d.Remove {
		drop[did] = true
	}
	for _, p := range d.Upsert {
		if p.DID == m.Self.DID {
			return nil, fmt.Errorf("netmap: delta lists this node (%s) as its own peer", p.DID)
		}
		if drop[p.DID] {
			return nil, fmt.Errorf("netmap: delta lists peer %s twice", p.DID)
		}
		drop[p.DID] = true
	}
	peers := make([]Node, 0, len(m.Peers)+len(d.Upsert))
	for _, p := range m.Peers {
		if !drop[p.DID] {
			peers = append(peers, p)
		}
	}
	peers = append(peers, d.Upsert...)
	slices.SortStableFunc(peers, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	out.Peers = peers
	return &out, nil
}
