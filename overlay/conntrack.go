package overlay

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"
)

// The flow table remembers the connections the filter let open, so their
// replies pass both ways without an allowing rule in the reply's direction
// (netmap.Filter: "replies of an allowed connection are allowed both ways").
//
// It is bounded: flowShards shards, each a Go map of at most
// maxFlows/flowShards entries under its own mutex. An entry expires after
// its protocol's idle timeout; expired entries are reclaimed when a shard is
// full, and if none is, the least recently used of a random sample is
// evicted (and counted). Entries are values, so lookups and updates do not
// allocate; a shard's map allocates only while it grows towards its bound.

// flowEntry is one tracked connection, stored under its canonical key.
type flowEntry struct {
	last    int64     // clock of the last packet, ns
	gen     uint64    // ruleSet.gen the rule was last checked against
	rule    int32     // index of the allowing rule in ruleSet.rules[dir]
	dir     direction // who opened it: dirIn, a peer; dirOut, this node
	swapped bool      // the opener's tuple is the reverse of the canonical key
}

type flowShard struct {
	mu sync.Mutex // guards m
	m  map[flowKey]flowEntry
	_  [40]byte // keep shards' mutexes on separate cache lines
}

type flowTable struct {
	shards   [flowShards]flowShard
	perShard int
	timeouts [256]int64 // idle timeout by IP protocol, ns

	evicted atomic.Uint64 // live flows evicted because their shard was full
	expired atomic.Uint64 // idle flows reclaimed
}

func newFlowTable(maxFlows int, tcp, udp, icmp, other time.Duration) *flowTable {
	t := &flowTable{perShard: max(maxFlows/flowShards, 1)}
	for i := range t.shards {
		t.shards[i].m = make(map[flowKey]flowEntry, min(t.perShard, 64))
	}
	for p := range t.timeouts {
		t.timeouts[p] = int64(other)
	}
	t.timeouts[protoTCP] = int64(tcp)
	t.timeouts[protoUDP] = int64(udp)
	t.timeouts[protoICMP] = int64(icmp)
	t.timeouts[protoICMPv6] = int64(icmp)
	return t
}

// canonical orders a key so that both directions of a connection share one
// entry; swapped says the key was reversed.
func canonical(k flowKey) (flowKey, bool) {
	c := bytes.Compare(k.src[:], k.dst[:])
	if c < 0 || (c == 0 && k.sport <= k.dport) {
		return k, false
	}
	return k.reverse(), true
}

// shardOf hashes a canonical key (FNV-1a over the parts that vary most).
func (t *flowTable) shardOf(k *flowKey) *flowShard {
	h := uint32(2166136261)
	for _, b := range k.src[12:] {
		h = (h ^ uint32(b)) * 16777619
	}
	for _, b := range k.dst[12:] {
		h = (h ^ uint32(b)) * 16777619
	}
	h = (h ^ uint32(k.sport)) * 16777619
	h = (h ^ uint32(k.dport)) * 16777619
	h = (h ^ uint32(k.proto)) * 16777619
	return &t.shards[h%flowShards]
}

// lookup finds the live flow of a packet with key k. reply says the packet
// travels against the opener's direction. The entry's idle clock is
// refreshed.
func (t *flowTable) lookup(k flowKey, now int64) (e flowEntry, reply, ok bool) {
	ck, swapped := canonical(k)
	s := t.shardOf(&ck)
	s.mu.Lock()
	e, ok = s.m[ck]
	if ok {
		if now-e.last > t.timeouts[ck.proto] {
			delete(s.m, ck)
			t.expired.Add(1)
			ok = false
		} else {
			e.last = now
			s.m[ck] = e
		}
	}
	s.mu.Unlock()
	return e, swapped != e.swapped, ok
}

// update rewrites the rule check of the flow of k (after a rule set change).
func (t *flowTable) update(k flowKey, gen uint64, rule int32) {
	ck, _ := canonical(k)
	s := t.shardOf(&ck)
	s.mu.Lock()
	if e, ok := s.m[ck]; ok {
		e.gen, e.rule = gen, rule
		s.m[ck] = e
	}
	s.mu.Unlock()
}

// remove forgets the flow of k.
func (t *flowTable) remove(k flowKey) {
	ck, _ := canonical(k)
	s := t.shardOf(&ck)
	s.mu.Lock()
	delete(s.m, ck)
	s.mu.Unlock()
}

// insert records a connection opened with key k (the opener's tuple).
func (t *flowTable) insert(k flowKey, dir direction, rule int32, gen uint64, now int64) {
	ck, swapped := canonical(k)
	s := t.shardOf(&ck)
	s.mu.Lock()
	if _, ok := s.m[ck]; !ok && len(s.m) >= t.perShard {
		t.makeRoom(s, now)
	}
	s.m[ck] = flowEntry{last: now, gen: gen, rule: rule, dir: dir, swapped: swapped}
	s.mu.Unlock()
}

// makeRoom frees at least one entry of a full shard: the expired ones among
// a sample, or else the least recently used of the sample. Called with
// s.mu held.
func (t *flowTable) makeRoom(s *flowShard, now int64) {
	var (
		oldest  flowKey
		oldestT int64 = 1<<63 - 1
		freed   int
		seen    int
	)
	for k, e := range s.m { // map iteration starts at a random entry
		if now-e.last > t.timeouts[k.proto] {
			delete(s.m, k)
			freed++
		} else if e.last < oldestT {
			oldest, oldestT = k, e.last
		}
		if seen++; seen >= evictSample {
			break
		}
	}
	if freed > 0 {
		t.expired.Add(uint64(freed))
		return
	}
	delete(s.m, oldest)
	t.evicted.Add(1)
}

// len is the number of entries (some may have expired and not been
// reclaimed yet).
func (t *flowTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
