package coordinator

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentnet/agentnet/coordinator/policy"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// snapshot is the committed node set and policy at one serial, read by every
// map build without touching the store. It is replaced, never modified; the
// policy compiled against its nodes is built once, by the first map build
// that needs it, and shared by all (so fan-out compiles once per serial).
//
// A refresh reads only the nodes written since the last one (trackedStore)
// and carries everything else over, encodings included, so a change costs
// the coordinator the size of the change plus one pass over the node list,
// not a decode of every node. Each refresh is one generation; the change
// log tells a stream which nodes changed since the generation it last sent
// (streamView), so it can send a delta.
type snapshot struct {
	gen    uint64 // refresh generation; grows by one per refresh
	serial uint64
	nodes  []wire.Node // sorted by name; Online not set
	ids    []uint32    // ids[i]: the stable id of nodes[i]
	pos    []int32     // pos[id]: position of node id in nodes; -1: not enrolled
	// dids[id] is the DID of every id issued since the coordinator started.
	// Append-only and shared between snapshots: a newer one appends past
	// the length older ones read.
	dids []string
	// log lists the nodes written by recent refreshes, oldest first; it is
	// complete for every generation after logFrom. Shared like dids.
	log     []nodeChange
	logFrom uint64
	policy  *policyState // nil: the built-in default
	made    time.Time    // when the refresh made it: the Issued time of its deltas

	// deltas holds the deltas signed from this snapshot, by the SHA-256 of
	// their payload: streams at the same serial with the same change (the
	// usual fan-out) share one Ed25519 signature instead of one each.
	deltas *sync.Map

	ixOnce sync.Once
	ix     *policy.Index // positions are those of nodes

	// enc caches each node's JSON encoding, offline and online, built by
	// the first map that needs it and carried over to later snapshots
	// while the node is unchanged: a fan-out then encodes every node once,
	// not once per map it appears in (N² encodings for N nodes).
	enc []*nodeEnc
}

// nodeChange says node id was written (created, changed or removed) by the
// refresh of generation gen.
type nodeChange struct {
	gen uint64
	id  uint32
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
	e := s.enc[i]
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

// position returns the position of the node with did, or -1.
func (s *snapshot) position(did string) int {
	return slices.IndexFunc(s.nodes, func(n wire.Node) bool { return n.DID == did })
}

// changedSince returns the ids written after generation gen, each once; ok
// is false when the log no longer reaches back that far.
func (s *snapshot) changedSince(gen uint64) (ids []uint32, ok bool) {
	if gen < s.logFrom {
		return nil, false
	}
	seen := map[uint32]bool{}
	for i := len(s.log) - 1; i >= 0 && s.log[i].gen > gen; i-- {
		if id := s.log[i].id; !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, true
}

// logKeep bounds the change log: at least this many entries, or twice the
// node count. A stream further behind gets a whole map.
const logKeep = 4096

// trackedStore is the coordinator's Store: it remembers the DIDs of the
// nodes every Update wrote, which the next snapshot refresh re-reads.
type trackedStore struct {
	store.Store
	mu    sync.Mutex
	dirty map[string]struct{}
}

func newTrackedStore(s store.Store) *trackedStore {
	return &trackedStore{Store: s, dirty: map[string]struct{}{}}
}

// Update runs fn through a store.Tx that records PutNode and DeleteNode. The
// DIDs are recorded even when fn fails: re-reading an unchanged node only
// costs the read.
func (s *trackedStore) Update(fn func(store.Tx) error) error {
	var wrote []string
	err := s.Store.Update(func(tx store.Tx) error {
		wrote = wrote[:0] // a store may retry fn
		return fn(trackedTx{Tx: tx, wrote: &wrote})
	})
	if len(wrote) > 0 {
		s.mu.Lock()
		for _, did := range wrote {
			s.dirty[did] = struct{}{}
		}
		s.mu.Unlock()
	}
	return err
}

// take returns and clears the DIDs written since the last take.
func (s *trackedStore) take() map[string]struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dirty
	s.dirty = map[string]struct{}{}
	return d
}

// giveBack returns DIDs a failed refresh took.
func (s *trackedStore) giveBack(d map[string]struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for did := range d {
		s.dirty[did] = struct{}{}
	}
}

type trackedTx struct {
	store.Tx
	wrote *[]string
}

func (t trackedTx) PutNode(n wire.Node) error {
	*t.wrote = append(*t.wrote, n.DID)
	return t.Tx.PutNode(n)
}

func (t trackedTx) DeleteNode(did string) error {
	*t.wrote = append(*t.wrote, did)
	return t.Tx.DeleteNode(did)
}

// refreshSnapshot makes the next snapshot from the current one and the
// nodes written since (or from the whole node set the first time, or when
// more than a quarter of the nodes changed at once). Refreshes are
// serialised; a node written while one runs is read by the next.
func (c *Coordinator) refreshSnapshot() error {
	c.snapMu.Lock()
	defer c.snapMu.Unlock()
	cur := c.snap.Load()
	dirty := c.store.take()
	full := cur == nil || len(dirty) > max(64, len(cur.nodes)/4)
	type read struct {
		did string
		n   wire.Node
		ok  bool
	}
	var (
		serial uint64
		all    []wire.Node
		reads  []read
		rec    wire.PolicyRecord
		ok     bool
	)
	err := c.store.View(func(tx store.Tx) (err error) {
		if serial, err = tx.Serial(); err != nil {
			return err
		}
		if full {
			if all, err = tx.Nodes(); err != nil {
				return err
			}
		} else {
			reads = reads[:0]
			for did := range dirty {
				n, ok, err := tx.Node(did)
				if err != nil {
					return err
				}
				reads = append(reads, read{did, n, ok})
			}
		}
		rec, ok, err = tx.Policy(0)
		return err
	})
	if err != nil {
		c.store.giveBack(dirty)
		return err
	}
	s := &snapshot{serial: serial, gen: 1, made: c.now().UTC(), deltas: new(sync.Map)}
	if cur != nil {
		s.gen, s.dids, s.log, s.logFrom = cur.gen+1, cur.dids, cur.log, cur.logFrom
	}
	s.policy = c.policyFor(rec, ok, cur)
	if full {
		slices.SortFunc(all, func(a, b wire.Node) int { return strings.Compare(a.Name, b.Name) })
		s.nodes = all
		s.ids = make([]uint32, len(all))
		s.enc = make([]*nodeEnc, len(all))
		for i, n := range all {
			s.ids[i] = c.nodeID(s, n.DID)
			s.enc[i] = &nodeEnc{}
		}
		// Streams that sent an older generation get a whole map.
		s.log, s.logFrom = nil, s.gen
	} else {
		// The unchanged nodes keep their order, ids and encodings; the
		// written ones that still exist are merged in by name.
		n := len(cur.nodes)
		s.nodes = make([]wire.Node, 0, n+len(reads))
		s.ids = make([]uint32, 0, n+len(reads))
		s.enc = make([]*nodeEnc, 0, n+len(reads))
		var fresh []read // written nodes that still exist, by name
		for _, r := range reads {
			if r.ok {
				fresh = append(fresh, r)
			}
		}
		slices.SortFunc(fresh, func(a, b read) int { return cmp.Compare(a.n.Name, b.n.Name) })
		add := func(r read) {
			s.nodes = append(s.nodes, r.n)
			s.ids = append(s.ids, c.nodeID(s, r.did))
			s.enc = append(s.enc, &nodeEnc{})
		}
		for i, node := range cur.nodes {
			if _, w := dirty[node.DID]; w {
				continue
			}
			for len(fresh) > 0 && fresh[0].n.Name < node.Name {
				add(fresh[0])
				fresh = fresh[1:]
			}
			s.nodes = append(s.nodes, node)
			s.ids = append(s.ids, cur.ids[i])
			s.enc = append(s.enc, cur.enc[i])
		}
		for _, r := range fresh {
			add(r)
		}
		for _, r := range reads {
			s.log = append(s.log, nodeChange{s.gen, c.nodeID(s, r.did)})
		}
		if keep := max(logKeep, 2*len(s.nodes)); len(s.log) > keep {
			drop := len(s.log) - keep/2
			s.logFrom = s.log[drop-1].gen
			s.log = slices.Clone(s.log[drop:])
		}
	}
	s.pos = make([]int32, len(s.dids))
	for i := range s.pos {
		s.pos[i] = -1
	}
	for i, id := range s.ids {
		s.pos[id] = int32(i)
	}
	c.snap.Store(s)
	return nil
}

// nodeID returns the stable id of did, issuing the next one (and recording
// it in s.dids) the first time. Called with snapMu held.
func (c *Coordinator) nodeID(s *snapshot, did string) uint32 {
	if id, ok := c.idOf[did]; ok {
		return id
	}
	id := uint32(len(s.dids))
	s.dids = append(s.dids, did)
	c.idOf[did] = id
	return id
}
