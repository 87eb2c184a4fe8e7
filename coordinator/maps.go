package coordinator

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/agentnet/agentnet/overlay/netmap"
)

// snapshot is the committed node set at one serial, read by every map build
// without touching the store. It is replaced, never modified.
type snapshot struct {
	serial uint64
	nodes  []netmap.Node // sorted by name; Online not set
}

// errNodeGone means a map was asked for a node that is no longer enrolled.
var errNodeGone = errors.New("node removed")

// refreshSnapshot reloads the node set from the store. Refreshes are
// serialised and never go back to an older serial, so concurrent mutations
// cannot leave a stale snapshot in place.
func (c *Coordinator) refreshSnapshot() error {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	var s snapshot
	err := c.store.View(func(tx Tx) (err error) {
		if s.serial, err = tx.Serial(); err != nil {
			return err
		}
		s.nodes, err = tx.Nodes()
		return err
	})
	if err != nil {
		return err
	}
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
// and live Online state. Peers are every other node (policy will narrow
// this) that has published an endpoint, sorted by name.
//
// A node enrolls without endpoints and publishes them with its first update,
// once its WireGuard device is up with its own peers configured. Listing it
// only from then on means no peer starts a handshake towards a node that
// would drop it, and no peer caches a map in which it is unreachable.
func (c *Coordinator) mapFor(did string) (*netmap.Signed, netmap.Node, error) {
	s := c.snap.Load()
	m := &netmap.Map{
		ProtocolVersion: netmap.ProtocolVersion,
		Serial:          s.serial,
		Issued:          c.now().UTC(),
		Domain:          c.cfg.Domain,
		DNSIP:           netmap.DefaultDNSIP,
		Prefix4:         c.prefix4,
		Prefix6:         c.ula,
		Peers:           make([]netmap.Node, 0, max(len(s.nodes)-1, 0)),
	}
	// TEMP(filter): replaced by policy compile at merge. Until the policy
	// compiler fills Map.Filter, every node may open anything to every
	// other node, as before the packet filter existed.
	all := []string{c.prefix4.String(), c.ula.String()}
	m.Filter = &netmap.Filter{
		Inbound:  []netmap.FilterRule{{Rule: "allow-all", Peers: all}},
		Outbound: []netmap.FilterRule{{Rule: "allow-all", Peers: all}},
	}
	found := false
	c.mu.Lock()
	for _, n := range s.nodes {
		_, n.Online = c.streams[n.DID]
		if n.DID == did {
			m.Self, found = n, true
		} else if len(n.Endpoints) > 0 {
			m.Peers = append(m.Peers, n)
		}
	}
	c.mu.Unlock()
	if !found {
		return nil, netmap.Node{}, refuse(http.StatusUnauthorized, netmap.CodeUnauthorized, "node not enrolled; join with a token").with(errNodeGone)
	}
	signed, err := netmap.Sign(c.signKey, m)
	if err != nil {
		return nil, netmap.Node{}, fmt.Errorf("coordinator: sign map: %w", err)
	}
	return signed, m.Self, nil
}
