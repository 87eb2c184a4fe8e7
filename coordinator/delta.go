package coordinator

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/agentnet/agentnet/wire"
)

// streamView is what one netmap stream has sent its node: enough to send
// the next change as a wire.Delta. A stream of N nodes' map costs the
// coordinator N bits here plus two hashes.
type streamView struct {
	gen    uint64       // snapshot generation of the last map or delta sent; 0: none yet
	serial uint64       // serial of the last map or delta sent (the next delta's base)
	policy *policyState // the policy it was built with
	self   uint32       // the node's id
	sent   []uint64     // bitset by node id: self and the peers the node holds
	relays [32]byte     // sha256 of the relay list JSON sent
	filter [32]byte     // sha256 of the filter JSON sent
	// mapBytes is the size of the last whole map, deltaBytes of the deltas
	// sent since: once the deltas outgrow the map a whole map is sent,
	// which bounds what a node caches (its map and the deltas after it).
	mapBytes, deltaBytes int
}

func setBit(b []uint64, id uint32) []uint64 {
	for int(id/64) >= len(b) {
		b = append(b, 0)
	}
	b[id/64] |= 1 << (id % 64)
	return b
}

func clearBit(b []uint64, id uint32) {
	if int(id/64) < len(b) {
		b[id/64] &^= 1 << (id % 64)
	}
}

func hasBit(b []uint64, id uint32) bool {
	return int(id/64) < len(b) && b[id/64]&(1<<(id%64)) != 0
}

// streamMessage returns the stream's next message for node did: a whole
// map first, then deltas from v when the node asked for them (deltas).
// A whole map replaces the delta when the policy changed, the stream fell
// behind the change log, or the change is over half the map. nil: nothing
// in this node's map changed.
func (c *Coordinator) streamMessage(did string, v *streamView, deltas bool) (*wire.StreamMessage, error) {
	if !deltas || v.gen == 0 {
		return c.wholeMap(did, v)
	}
	s := c.snap.Load()
	if s.policy != v.policy || v.deltaBytes > v.mapBytes {
		return c.wholeMap(did, v)
	}
	ids, ok := s.changedSince(v.gen)
	if !ok || len(ids) > 64 && len(ids) > len(s.nodes)/2 {
		return c.wholeMap(did, v)
	}
	self := -1
	if int(v.self) < len(s.pos) {
		self = int(s.pos[v.self])
	}
	if self < 0 {
		return nil, errNodeGone
	}
	ix := s.index(c)
	reach := ix.Reachable(self)
	relays := c.relaysFor(s.nodes[self].Name, c.now())
	rb, fb, err := tailJSON(relays, ix.Filter(self))
	if err != nil {
		return nil, err
	}
	rsum, fsum := sha256.Sum256(rb), sha256.Sum256(fb)

	type up struct {
		i      int
		online bool
	}
	var (
		ups    []up
		remove []string
		selfUp = -1
	)
	c.mu.Lock()
	for _, id := range ids {
		i := int(s.pos[id])
		switch {
		case i == self:
			selfUp = i
		case i >= 0 && listed(s, reach, self, i):
			_, online := c.streams[s.nodes[i].DID]
			ups = append(ups, up{i, online})
		case hasBit(v.sent, id):
			remove = append(remove, s.dids[id])
		}
	}
	c.mu.Unlock()
	if selfUp < 0 && len(ups) == 0 && len(remove) == 0 && rsum == v.relays && fsum == v.filter {
		v.gen = s.gen // nothing for this node; the next delta still starts at v.serial
		return nil, nil
	}

	head, err := json.Marshal(struct {
		ProtocolVersion int    `json:"protocol_version"`
		Base            uint64 `json:"base"`
		Serial          uint64 `json:"serial"`
		Issued          any    `json:"issued"`
	}{wire.ProtocolVersion, v.serial, s.serial, s.made})
	if err != nil {
		return nil, fmt.Errorf("coordinator: encode delta: %w", err)
	}
	// The JSON object json.Marshal(wire.Delta) would give, assembled from
	// the snapshot's cached node encodings.
	p := append(make([]byte, 0, 256+len(rb)+len(fb)+400*len(ups)), head[:len(head)-1]...)
	if selfUp >= 0 {
		b, err := s.encoded(self, true)
		if err != nil {
			return nil, fmt.Errorf("coordinator: encode node: %w", err)
		}
		p = append(append(p, `,"self":`...), b...)
	}
	if len(ups) > 0 {
		p = append(p, `,"upsert":[`...)
		for k, u := range ups {
			b, err := s.encoded(u.i, u.online)
			if err != nil {
				return nil, fmt.Errorf("coordinator: encode node: %w", err)
			}
			if k > 0 {
				p = append(p, ',')
			}
			p = append(p, b...)
		}
		p = append(p, ']')
	}
	if len(remove) > 0 {
		rm, err := json.Marshal(remove)
		if err != nil {
			return nil, fmt.Errorf("coordinator: encode delta: %w", err)
		}
		p = append(append(p, `,"remove":`...), rm...)
	}
	if rsum != v.relays {
		p = append(append(p, `,"relays":`...), rb...)
	}
	if fsum != v.filter {
		p = append(append(p, `,"filter":`...), fb...)
	}
	p = append(p, '}')

	for _, u := range ups {
		v.sent = setBit(v.sent, s.ids[u.i])
	}
	for _, id := range ids {
		if i := s.pos[id]; i < 0 || int(i) != self && !listed(s, reach, self, int(i)) {
			clearBit(v.sent, id)
		}
	}
	v.gen, v.serial, v.relays, v.filter = s.gen, s.serial, rsum, fsum
	v.deltaBytes += len(p)
	return &wire.StreamMessage{Type: wire.MsgDelta, Delta: s.signDelta(c, p)}, nil
}

// wholeMap is a map message, recorded in v.
func (c *Coordinator) wholeMap(did string, v *streamView) (*wire.StreamMessage, error) {
	signed, _, err := c.mapForView(did, v)
	if err != nil {
		return nil, err
	}
	return &wire.StreamMessage{Type: wire.MsgMap, Map: signed}, nil
}

// signDelta signs payload, or returns the signature another stream already
// made of the same bytes from this snapshot.
func (s *snapshot) signDelta(c *Coordinator, payload []byte) *wire.Signed {
	if s.deltas == nil {
		return wire.SignDeltaPayload(c.signKey, payload)
	}
	sum := sha256.Sum256(payload)
	if d, ok := s.deltas.Load(sum); ok {
		return d.(*wire.Signed)
	}
	d, _ := s.deltas.LoadOrStore(sum, wire.SignDeltaPayload(c.signKey, payload))
	return d.(*wire.Signed)
}
