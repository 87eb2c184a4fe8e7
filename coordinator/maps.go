package coordinator

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

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
	m := &netmap.Map{
		ProtocolVersion: netmap.ProtocolVersion,
		Serial:          s.serial,
		Issued:          c.now().UTC(),
		Domain:          c.cfg.Domain,
		DNSIP:           netmap.DefaultDNSIP,
		Prefix4:         c.prefix4,
		Prefix6:         c.ula,
		Peers:           make([]netmap.Node, 0, reach.Len()),
		Filter:          ix.Filter(self),
	}
	c.mu.Lock()
	for i, n := range s.nodes {
		if i == self {
			_, n.Online = c.streams[n.DID]
			m.Self = n
		} else if len(n.Endpoints) > 0 && reach.Has(i) {
			_, n.Online = c.streams[n.DID]
			m.Peers = append(m.Peers, n)
		}
	}
	c.mu.Unlock()
	m.Relays = c.relaysFor(m.Self.Name, m.Issued)
	signed, err := netmap.Sign(c.signKey, m)
	if err != nil {
		return nil, netmap.Node{}, fmt.Errorf("coordinator: sign map: %w", err)
	}
	return signed, m.Self, nil
}
