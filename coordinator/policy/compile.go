package policy

import (
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/agentnet/agentnet/wire"
)

// Options tune an Index. The zero value is valid.
type Options struct {
	// Version is optional: copied into every Filter's PolicyVersion.
	// Default 0.
	Version uint64
	// Prefix4 and Prefix6 are optional: the overlay prefixes. When both
	// are set, a rule side written as "*" compiles to these two prefixes
	// instead of every node's addresses: smaller maps, and a node that
	// joins is covered before the next map. Default: unset (every node's
	// addresses are listed).
	Prefix4, Prefix6 netip.Prefix
}

// Set is a set of node positions (indices into the node slice an Index was
// built from).
type Set []uint64

func newSet(n int) Set { return make(Set, (n+63)/64) }

// Has reports whether position i is in the set.
func (s Set) Has(i int) bool { return i >= 0 && i/64 < len(s) && s[i/64]&(1<<(i%64)) != 0 }

func (s Set) add(i int) { s[i/64] |= 1 << (i % 64) }

func (s Set) union(o Set) {
	for i := range s {
		s[i] |= o[i]
	}
}

// Len returns the number of positions in the set.
func (s Set) Len() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// Index is a policy compiled against one node set: for every rule, the set
// of nodes each side selects and the address prefixes of those nodes. It
// is built once per (node set, policy) and then answers Filter and
// Reachable for any node in O(rules + output) and O(rules × nodes/64).
// An Index is immutable and safe for concurrent use.
type Index struct {
	p      *Policy
	opt    Options
	nodes  []Node
	byName map[string]int
	pfx    [][]string // per node: its addresses as /32 and /128 prefixes
	rules  []compiledRule
}

type compiledRule struct {
	name             string
	from, to         Set
	fromAll, toAll   bool     // the side has a "*" and Options has the prefixes
	fromPeer, toPeer []string // prefixes of the side's nodes (or the overlay prefixes)
	shapes           []shape  // protocol/port combinations of the rule's ports
}

// shape is one protocols × ports combination a wire.FilterRule can carry.
type shape struct {
	protos []string
	ports  []wire.PortRange
}

// NewIndex compiles p against nodes. Nodes keep their positions: Filter(i)
// and Reachable(i) speak of nodes[i].
func NewIndex(p *Policy, nodes []Node, opt Options) *Index {
	ix := &Index{p: p, opt: opt, nodes: nodes, byName: make(map[string]int, len(nodes)), pfx: make([][]string, len(nodes))}
	byTag := map[string][]int{}
	for i, n := range nodes {
		ix.byName[n.Name] = i
		for _, t := range n.Tags {
			byTag[t] = append(byTag[t], i)
		}
		ps := make([]string, 0, len(n.Addrs))
		for _, a := range n.Addrs {
			if a.IsValid() {
				ps = append(ps, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()).String())
			}
		}
		ix.pfx[i] = ps
	}
	compact := opt.Prefix4.IsValid() && opt.Prefix6.IsValid()
	var overlay []string
	if compact {
		overlay = []string{opt.Prefix4.Masked().String(), opt.Prefix6.Masked().String()}
	}
	side := func(sels []Selector) (Set, bool, []string) {
		s := newSet(len(nodes))
		all := false
		var add func(sels []Selector)
		add = func(sels []Selector) {
			for _, sel := range sels {
				switch sel.Kind {
				case SelectAll:
					all = true
				case SelectNode:
					if i, ok := ix.byName[sel.Value]; ok {
						s.add(i)
					}
				case SelectTag:
					for _, i := range byTag[sel.Value] {
						s.add(i)
					}
				case SelectGroup:
					add(p.Groups[sel.Value]) // groups hold no groups (Parse)
				}
			}
		}
		add(sels)
		if all {
			for i := range nodes {
				s.add(i)
			}
			if compact {
				return s, true, overlay
			}
		}
		var peers []string
		for i := range nodes {
			if s.Has(i) {
				peers = append(peers, ix.pfx[i]...)
			}
		}
		return s, false, peers
	}
	ix.rules = make([]compiledRule, len(p.Rules))
	for k := range p.Rules {
		r := &p.Rules[k]
		cr := &ix.rules[k]
		cr.name = r.Name
		cr.from, cr.fromAll, cr.fromPeer = side(r.From)
		cr.to, cr.toAll, cr.toPeer = side(r.To)
		cr.shapes = shapes(r.Ports)
	}
	return ix
}

// shapes groups a rule's port specs by protocol, since a FilterRule allows
// the cross product of its Protos and Ports: tcp:8080 and udp:53 become two
// shapes, or one when tcp and udp list the same ports.
func shapes(specs []PortSpec) []shape {
	if len(specs) == 0 {
		return []shape{{}}
	}
	type acc struct {
		seen, all bool
		ports     []wire.PortRange
	}
	var tcp, udp acc
	icmp := false
	for _, s := range specs {
		a := &tcp
		switch s.Proto {
		case ProtoICMP:
			icmp = true
			continue
		case ProtoUDP:
			a = &udp
		}
		a.seen = true
		if s.AllPorts() {
			a.all = true
		} else {
			a.ports = append(a.ports, wire.PortRange{First: s.First, Last: s.Last})
		}
	}
	portsOf := func(a acc) []wire.PortRange {
		if a.all {
			return nil
		}
		return a.ports
	}
	var out []shape
	if tcp.seen && udp.seen && tcp.all == udp.all && equalRanges(portsOf(tcp), portsOf(udp)) {
		out = append(out, shape{protos: []string{ProtoTCP, ProtoUDP}, ports: portsOf(tcp)})
	} else {
		if tcp.seen {
			out = append(out, shape{protos: []string{ProtoTCP}, ports: portsOf(tcp)})
		}
		if udp.seen {
			out = append(out, shape{protos: []string{ProtoUDP}, ports: portsOf(udp)})
		}
	}
	if icmp {
		out = append(out, shape{protos: []string{ProtoICMP}})
	}
	return out
}

func equalRanges(a, b []wire.PortRange) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Len returns the number of nodes the index was built from.
func (ix *Index) Len() int { return len(ix.nodes) }

// Lookup returns the position of the node named name.
func (ix *Index) Lookup(name string) (int, bool) {
	i, ok := ix.byName[name]
	return i, ok
}

// Policy returns the policy the index was built from.
func (ix *Index) Policy() *Policy { return ix.p }

// Filter compiles the policy for nodes[self]: Inbound rules name the peers
// that may open connections to it, Outbound rules the peers it may open
// connections to. Peers are /32 and /128 prefixes (or the overlay prefixes
// for "*", see Options); the node's own addresses are left out except
// inside the overlay prefixes. Rules that leave no peer are left out. An
// unknown position yields nil (the node allows nothing).
//
// The returned Filter shares its Peers slices with the Index and other
// filters: treat it as read-only.
func (ix *Index) Filter(self int) *wire.Filter {
	if self < 0 || self >= len(ix.nodes) {
		return nil
	}
	f := &wire.Filter{PolicyVersion: ix.opt.Version, Inbound: []wire.FilterRule{}, Outbound: []wire.FilterRule{}}
	for k := range ix.rules {
		cr := &ix.rules[k]
		if cr.to.Has(self) {
			f.Inbound = cr.appendRules(f.Inbound, ix.peersExcept(cr.fromPeer, cr.fromAll, cr.from, self))
		}
		if cr.from.Has(self) {
			f.Outbound = cr.appendRules(f.Outbound, ix.peersExcept(cr.toPeer, cr.toAll, cr.to, self))
		}
	}
	return f
}

// peersExcept returns peers without the addresses of self. It copies only
// when self is among them.
func (ix *Index) peersExcept(peers []string, all bool, set Set, self int) []string {
	if all || !set.Has(self) {
		return peers
	}
	mine := ix.pfx[self]
	out := make([]string, 0, max(len(peers)-len(mine), 0))
	for _, p := range peers {
		skip := false
		for _, m := range mine {
			if p == m {
				skip = true
				break
			}
		}
		if !skip {
			out = append(out, p)
		}
	}
	return out
}

func (cr *compiledRule) appendRules(dst []wire.FilterRule, peers []string) []wire.FilterRule {
	if len(peers) == 0 {
		return dst
	}
	for _, s := range cr.shapes {
		dst = append(dst, wire.FilterRule{Rule: cr.name, Peers: peers, Protos: s.protos, Ports: s.ports})
	}
	return dst
}

// Reachable returns the nodes nodes[self] may open connections to or
// accept them from, without self: the peers its map lists.
func (ix *Index) Reachable(self int) Set {
	s := newSet(len(ix.nodes))
	if self < 0 || self >= len(ix.nodes) {
		return s
	}
	for k := range ix.rules {
		cr := &ix.rules[k]
		if cr.from.Has(self) {
			s.union(cr.to)
		}
		if cr.to.Has(self) {
			s.union(cr.from)
		}
	}
	s[self/64] &^= 1 << (self % 64)
	return s
}

// Decide is Policy.Decide for two nodes of the index, by name.
func (ix *Index) Decide(from, to, proto string, port uint16) (Decision, error) {
	fi, ok := ix.byName[from]
	if !ok {
		return Decision{}, fmt.Errorf("%w: %q", ErrUnknownNode, from)
	}
	ti, ok := ix.byName[to]
	if !ok {
		return Decision{}, fmt.Errorf("%w: %q", ErrUnknownNode, to)
	}
	return ix.p.Decide(ix.nodes[fi], ix.nodes[ti], proto, port), nil
}

// Compile is NewIndex(p, nodes, Options{}).Filter for the node named self;
// nil if there is no such node. Build an Index to compile for many nodes.
func Compile(p *Policy, nodes []Node, self string) *wire.Filter {
	ix := NewIndex(p, nodes, Options{})
	i, ok := ix.Lookup(self)
	if !ok {
		return nil
	}
	return ix.Filter(i)
}
