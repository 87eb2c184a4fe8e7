package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/agentnet/agentnet/wire"
)

// direction is the way a packet crosses the filter.
type direction uint8

const (
	dirIn  direction = iota // from a peer to this node (tun.Device Write)
	dirOut                  // from this node to a peer (tun.Device Read)
)

func (d direction) String() string {
	if d == dirIn {
		return "inbound"
	}
	return "outbound"
}

// defaultDenyRule names denials no rule came close to, in logs, Status and
// metrics.
const defaultDenyRule = "default deny"

// ruleCounters count the packets a rule decided. They outlive rule sets, so
// a rule keeps its counts across maps (Prometheus counters never go back).
type ruleCounters struct {
	allowed atomic.Uint64 // packets allowed by the rule, replies included
	denied  atomic.Uint64 // packets from/to the rule's peers on a protocol or port it does not allow
}

// counterSet hands out the ruleCounters of (direction, rule name), the same
// ones on every map.
type counterSet struct {
	mu sync.Mutex // guards m
	m  map[counterKey]*ruleCounters
}

type counterKey struct {
	dir  direction
	rule string
}

func (c *counterSet) get(dir direction, rule string) *ruleCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[counterKey]*ruleCounters)
	}
	k := counterKey{dir, rule}
	rc := c.m[k]
	if rc == nil {
		rc = new(ruleCounters)
		c.m[k] = rc
	}
	return rc
}

// each calls fn for every counter ever handed out, sorted by direction and rule.
func (c *counterSet) each(fn func(dir direction, rule string, rc *ruleCounters)) {
	c.mu.Lock()
	keys := make([]counterKey, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	m := c.m
	c.mu.Unlock()
	slices.SortFunc(keys, func(a, b counterKey) int {
		if a.dir != b.dir {
			return int(a.dir) - int(b.dir)
		}
		return strings.Compare(a.rule, b.rule)
	})
	for _, k := range keys {
		c.mu.Lock()
		rc := m[k]
		c.mu.Unlock()
		fn(k.dir, k.rule, rc)
	}
}

// ruleSet is a compiled wire.Filter. It is immutable once built and read
// without locks through filterDevice.rules.
type ruleSet struct {
	version uint64    // wire.Filter.PolicyVersion
	gen     uint64    // grows with every installed set; flows re-check their rule when it changes
	rules   [2][]rule // by direction
	self    [2]netip.Addr
}

// rule is one compiled wire.FilterRule.
type rule struct {
	name   string
	ctr    *ruleCounters
	hosts  map[[16]byte]struct{} // single addresses (/32, /128)
	nets   []netip.Prefix        // wider prefixes
	protos [4]uint64             // bitmap over IP protocol numbers
	ports  []wire.PortRange      // empty: all ports
}

// matchPeer reports whether a (the other side of the connection) is one of
// the rule's peers.
func (r *rule) matchPeer(a [16]byte) bool {
	if _, ok := r.hosts[a]; ok {
		return true
	}
	if len(r.nets) == 0 {
		return false
	}
	ip := addr16(a)
	for _, p := range r.nets {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (r *rule) matchProto(proto uint8) bool {
	return r.protos[proto>>6]&(1<<(proto&63)) != 0
}

func (r *rule) matchPort(port uint16) bool {
	if len(r.ports) == 0 {
		return true
	}
	for _, pr := range r.ports {
		if port >= pr.First && port <= pr.Last {
			return true
		}
	}
	return false
}

// match finds the first rule of rules allowing a connection opened to or
// from peer with proto to port (port is ignored unless hasPorts). When none
// does, near is the first rule that lists the peer (it refused on protocol
// or port), or -1.
func match(rules []rule, peer [16]byte, proto uint8, port uint16, hasPorts bool) (idx, near int) {
	near = -1
	for i := range rules {
		r := &rules[i]
		if !r.matchPeer(peer) {
			continue
		}
		if r.matchProto(proto) && (!hasPorts || r.matchPort(port)) {
			return i, near
		}
		if near < 0 {
			near = i
		}
	}
	return -1, near
}

// compileFilter builds the rule set of f (nil: no rules, deny everything).
// Rules, peers and protocols that do not parse are left out (fail closed)
// and reported in problems, one line each.
func compileFilter(f *wire.Filter, self4, self6 netip.Addr, gen uint64, ctrs *counterSet) (rs *ruleSet, problems []string) {
	rs = &ruleSet{gen: gen, self: [2]netip.Addr{self4, self6}}
	if f == nil {
		return rs, nil
	}
	rs.version = f.PolicyVersion
	for dir, frs := range [2][]wire.FilterRule{f.Inbound, f.Outbound} {
		d := direction(dir)
		for i, fr := range frs {
			r, err := compileRule(fr)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s rule %d (%q): %v; rule left out", d, i, fr.Rule, err))
				continue
			}
			r.ctr = ctrs.get(d, r.name)
			rs.rules[d] = append(rs.rules[d], r)
		}
	}
	return rs, problems
}

func compileRule(fr wire.FilterRule) (rule, error) {
	r := rule{name: fr.Rule, hosts: make(map[[16]byte]struct{})}
	switch r.name {
	case "":
		r.name = "unnamed"
	case defaultDenyRule: // keep the label of real default denials unambiguous
		r.name = "rule " + defaultDenyRule
	}
	for _, s := range fr.Peers {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return rule{}, fmt.Errorf("peer %q is neither an address nor a prefix", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = p.Masked()
		if p.Addr().Zone() != "" {
			return rule{}, fmt.Errorf("peer %q has a zone", s)
		}
		if p.IsSingleIP() {
			r.hosts[p.Addr().Unmap().As16()] = struct{}{}
		} else {
			r.nets = append(r.nets, p)
		}
	}
	if len(fr.Protos) == 0 {
		r.protos = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
	}
	for _, s := range fr.Protos {
		switch strings.ToLower(s) {
		case "tcp":
			r.setProto(protoTCP)
		case "udp":
			r.setProto(protoUDP)
		case "icmp", "icmpv6", "ipv6-icmp":
			r.setProto(protoICMP)
			r.setProto(protoICMPv6)
		default:
			n, err := strconv.ParseUint(s, 10, 8)
			if err != nil {
				return rule{}, fmt.Errorf("unknown protocol %q (want tcp, udp, icmp or a number 0-255)", s)
			}
			r.setProto(uint8(n))
		}
	}
	for _, pr := range fr.Ports {
		if pr.First > pr.Last {
			return rule{}, fmt.Errorf("port range %d-%d is empty", pr.First, pr.Last)
		}
		r.ports = append(r.ports, pr)
	}
	return r, nil
}

func (r *rule) setProto(p uint8) { r.protos[p>>6] |= 1 << (p & 63) }
