package coordinator

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/agentnet/agentnet/coordinator/policy"
	"github.com/agentnet/agentnet/wire"
)

// mapHead is the part of wire.Map before Self, encoded with the same
// field names; mapFor appends self, peers, relays and filter to it.
type mapHead struct {
	ProtocolVersion int          `json:"protocol_version"`
	Serial          uint64       `json:"serial"`
	Issued          time.Time    `json:"issued"`
	Domain          string       `json:"domain"`
	DNSIP           netip.Addr   `json:"dns_ip"`
	Prefix4         netip.Prefix `json:"prefix4"`
	Prefix6         netip.Prefix `json:"prefix6"`
}

// errNodeGone means a map was asked for a node that is no longer enrolled.
var errNodeGone = errors.New("node removed")

// changed publishes a committed mutation: refresh the snapshot, then wake
// every stream.
func (c *Coordinator) changed() error {
	err := c.refreshSnapshot()
	c.notifyAll()
	return err
}

// mapFor builds and signs the map of node did from the current snapshot
// and live Online state. Peers are the other nodes the policy lets it reach
// or be reached by that have published an endpoint, sorted by name; Filter
// is the policy compiled for it.
//
// A node enrolls without endpoints and publishes them with its first update,
// once its WireGuard device is up with its own peers configured. Listing it
// only from then on means no peer starts a handshake towards a node that
// would drop it, and no peer caches a map in which it is unreachable.
func (c *Coordinator) mapFor(did string) (*wire.Signed, wire.Node, error) {
	return c.mapForView(did, nil)
}

// mapForView is mapFor that also records in v (if not nil) what the map
// holds, for the deltas that follow it on a stream.
func (c *Coordinator) mapForView(did string, v *streamView) (*wire.Signed, wire.Node, error) {
	s := c.snap.Load()
	self := s.position(did)
	if self < 0 {
		return nil, wire.Node{}, refuse(http.StatusUnauthorized, wire.CodeUnauthorized, "node not enrolled; join with a token").with(errNodeGone)
	}
	ix := s.index(c)
	reach := ix.Reachable(self)
	head := mapHead{
		ProtocolVersion: wire.ProtocolVersion,
		Serial:          s.serial,
		Issued:          c.now().UTC(),
		Domain:          c.cfg.Domain,
		DNSIP:           wire.DefaultDNSIP,
		Prefix4:         c.prefix4,
		Prefix6:         c.ula,
	}
	// Which nodes, and their live Online state, under c.mu; the JSON is
	// assembled outside it from the snapshot's cached node encodings.
	type pick struct {
		i      int
		online bool
	}
	picks := make([]pick, 0, reach.Len()+1)
	c.mu.Lock()
	for i, n := range s.nodes {
		if i == self || listed(s, reach, self, i) {
			_, online := c.streams[n.DID]
			picks = append(picks, pick{i, online})
		}
	}
	c.mu.Unlock()
	selfNode := s.nodes[self]
	var selfJSON []byte
	peers := make([][]byte, 0, len(picks))
	size := 0
	for _, p := range picks {
		b, err := s.encoded(p.i, p.online)
		if err != nil {
			return nil, wire.Node{}, fmt.Errorf("coordinator: encode node: %w", err)
		}
		if p.i == self {
			selfJSON, selfNode.Online = b, p.online
			continue
		}
		peers = append(peers, b)
		size += len(b) + 1
	}
	hb, err := json.Marshal(head)
	if err != nil {
		return nil, wire.Node{}, fmt.Errorf("coordinator: encode map: %w", err)
	}
	relays := c.relaysFor(selfNode.Name, head.Issued)
	rb, fb, err := tailJSON(relays, ix.Filter(self))
	if err != nil {
		return nil, wire.Node{}, err
	}
	// {head…,"self":…,"peers":[…],"relays":…,"filter":…} — the same JSON
	// object as json.Marshal(wire.Map) would give, without re-encoding
	// every peer.
	payload := make([]byte, 0, len(hb)+len(selfJSON)+size+len(rb)+len(fb)+64)
	payload = append(payload, hb[:len(hb)-1]...)
	payload = append(payload, `,"self":`...)
	payload = append(payload, selfJSON...)
	payload = append(payload, `,"peers":[`...)
	for i, b := range peers {
		if i > 0 {
			payload = append(payload, ',')
		}
		payload = append(payload, b...)
	}
	payload = append(payload, ']')
	if len(relays) > 0 {
		payload = append(payload, `,"relays":`...)
		payload = append(payload, rb...)
	}
	payload = append(payload, `,"filter":`...)
	payload = append(payload, fb...)
	payload = append(payload, '}')
	if v != nil {
		v.gen, v.serial, v.policy, v.self = s.gen, s.serial, s.policy, s.ids[self]
		v.sent = v.sent[:0]
		for _, p := range picks {
			v.sent = setBit(v.sent, s.ids[p.i])
		}
		v.relays, v.filter = sha256.Sum256(rb), sha256.Sum256(fb)
		v.mapBytes, v.deltaBytes = len(payload), 0
	}
	return wire.SignPayload(c.signKey, payload), selfNode, nil
}

// listed reports whether node i appears in the map of node self: the
// policy lets them talk and it has published an endpoint.
func listed(s *snapshot, reach policy.Set, self, i int) bool {
	return i != self && len(s.nodes[i].Endpoints) > 0 && reach.Has(i)
}

// tailJSON encodes a map's relays (an empty list as [], which a delta needs
// to say "none") and filter.
func tailJSON(relays []wire.Relay, f *wire.Filter) (rb, fb []byte, err error) {
	if relays == nil {
		relays = []wire.Relay{}
	}
	if rb, err = json.Marshal(relays); err != nil {
		return nil, nil, fmt.Errorf("coordinator: encode relays: %w", err)
	}
	if fb, err = json.Marshal(f); err != nil {
		return nil, nil, fmt.Errorf("coordinator: encode filter: %w", err)
	}
	return rb, fb, nil
}
