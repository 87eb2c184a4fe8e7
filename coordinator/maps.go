package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentnet/agentnet/coordinator/policy"
	"github.com/agentnet/agentnet/overlay/netmap"
)

// snapshot is the committed node set and policy at one serial, read by every
// map build without touching the store. It is replaced, never modified; the
// policy compiled against its nodes is built once, by the first map build
// that needs it, and shared by all (so fan-out compiles once per serial).
type snapshot struct {
	serial uint64
	nodes  []netmap.Node // sorted by name; Online not set
	policy *policyState  // nil: the built-in default

	ixOnce sync.Once
	ix     *policy.Index // positions are those of nodes

	// enc caches each node's JSON encoding, offline and online, built by
	// the first map that needs it: a fan-out then encodes every node once,
	// not once per map it appears in (N² encodings for N nodes).
	enc []nodeEnc
}

type nodeEnc struct {
	once [2]sync.Once
	b    [2][]byte
}

// encoded returns node i's JSON with Online set to online.
func (s *snapshot) encoded(i int, online bool) ([]byte, error) {
	k := 0
	if online {
		k = 1
	}
	e := &s.enc[i]
	var err error
	e.once[k].Do(func() {
		n := s.nodes[i]
		n.Online = online
		e.b[k], err = json.Marshal(n)
	})
	if err != nil {
		return nil, err
	}
	return e.b[k], nil
}

// mapHead is the part of netmap.Map before Self, encoded with the same
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

// refreshSnapshot reloads the node set from the store. Refreshes are
// serialised and never go back to an older serial, so concurrent mutations
// cannot leave a stale snapshot in place.
func (c *Coordinator) refreshSnapshot() error {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	var (
		s   snapshot
		rec PolicyRecord
		ok  bool
	)
	err := c.store.View(func(tx Tx) (err error) {
		if s.serial, err = tx.Serial(); err != nil {
			return err
		}
		if s.nodes, err = tx.Nodes(); err != nil {
			return err
		}
		rec, ok, err = tx.Policy(0)
		return err
	})
	if err != nil {
		return err
	}
	s.policy = c.policyFor(rec, ok, c.snap.Load())
	slices.SortFunc(s.nodes, func(a, b netmap.Node) int { return strings.Compare(a.Name, b.Name) })
	s.enc = make([]nodeEnc, len(s.nodes))
	if cur := c.snap.Load(); cur == nil || s.serial >= cur.serial {
		c.snap.Store(&s)
	}
	return nil
}

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
func (c *Coordinator) mapFor(did string) (*netmap.Signed, netmap.Node, error) {
	s := c.snap.Load()
	self := slices.IndexFunc(s.nodes, func(n netmap.Node) bool { return n.DID == did })
	if self < 0 {
		return nil, netmap.Node{}, refuse(http.StatusUnauthorized, netmap.CodeUnauthorized, "node not enrolled; join with a token").with(errNodeGone)
	}
	ix := s.index(c)
	reach := ix.Reachable(self)
	head := mapHead{
		ProtocolVersion: netmap.ProtocolVersion,
		Serial:          s.serial,
		Issued:          c.now().UTC(),
		Domain:          c.cfg.Domain,
		DNSIP:           netmap.DefaultDNSIP,
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
		if i == self || len(n.Endpoints) > 0 && reach.Has(i) {
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
			return nil, netmap.Node{}, fmt.Errorf("coordinator: encode node: %w", err)
		}
		if p.i == self {
			selfJSON, selfNode.Online = b, p.online
			continue
		}
		peers = append(peers, b)
		size += len(b) + 1
	}
	relays := c.relaysFor(selfNode.Name, head.Issued)
	hb, err := json.Marshal(head)
	if err != nil {
		return nil, netmap.Node{}, fmt.Errorf("coordinator: encode map: %w", err)
	}
	tail, err := json.Marshal(struct {
		Relays []netmap.Relay `json:"relays,omitempty"`
		Filter *netmap.Filter `json:"filter,omitempty"`
	}{relays, ix.Filter(self)})
	if err != nil {
		return nil, netmap.Node{}, fmt.Errorf("coordinator: encode map: %w", err)
	}
	// {head…,"self":…,"peers":[…],tail…} — the same JSON object as
	// json.Marshal(netmap.Map) would give, without re-encoding every peer.
	payload := make([]byte, 0, len(hb)+len(selfJSON)+size+len(tail)+32)
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
	if len(tail) > 2 { // more than "{}"
		payload = append(payload, ',')
		payload = append(payload, tail[1:]...)
	} else {
		payload = append(payload, '}')
	}
	return netmap.SignPayload(c.signKey, payload), selfNode, nil
}
