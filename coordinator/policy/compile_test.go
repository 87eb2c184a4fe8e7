package policy

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

func node(name string, host byte, tags ...string) Node {
	return Node{Name: name, Tags: tags, Addrs: []netip.Addr{
		netip.AddrFrom4([4]byte{100, 96, 0, host}),
		netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x12, 15: host}),
	}}
}

func pfx(host byte) []string {
	return []string{fmt.Sprintf("100.96.0.%d/32", host), fmt.Sprintf("fd12::%x/128", host)}
}

func TestCompile(t *testing.T) {
	p := mustParse(t, `groups:
  planners: [planner, tag:planning]
rules:
  - name: planners-to-search
    from: [group:planners]
    to: [search, tag:search]
    ports: [tcp:8080, tcp:9000-9100, udp:53, icmp]
  - name: search-mesh
    from: [tag:search]
    to: [tag:search]
    ports: [tcp:7000, udp:7000]
`)
	nodes := []Node{
		node("planner", 1),
		node("planner2", 2, "tag:planning"),
		node("search", 3),
		node("search2", 4, "tag:search"),
		node("search3", 5, "tag:search"),
		node("writer", 6),
	}
	ix := NewIndex(p, nodes, Options{Version: 7})
	tcpUDP := []wire.FilterRule{
		{Rule: "planners-to-search", Protos: []string{"tcp"}, Ports: []wire.PortRange{{First: 8080, Last: 8080}, {First: 9000, Last: 9100}}},
		{Rule: "planners-to-search", Protos: []string{"udp"}, Ports: []wire.PortRange{{First: 53, Last: 53}}},
		{Rule: "planners-to-search", Protos: []string{"icmp"}},
	}
	withPeers := func(rules []wire.FilterRule, peers ...[]string) []wire.FilterRule {
		out := slices.Clone(rules)
		for i := range out {
			out[i].Peers = slices.Concat(peers...)
		}
		return out
	}
	mesh := wire.FilterRule{Rule: "search-mesh", Protos: []string{"tcp", "udp"}, Ports: []wire.PortRange{{First: 7000, Last: 7000}}}
	cases := []struct {
		self    string
		in, out []wire.FilterRule
		reach   []string
	}{
		{"planner", []wire.FilterRule{}, withPeers(tcpUDP, pfx(3), pfx(4), pfx(5)), []string{"search", "search2", "search3"}},
		{"planner2", []wire.FilterRule{}, withPeers(tcpUDP, pfx(3), pfx(4), pfx(5)), []string{"search", "search2", "search3"}},
		{"search", withPeers(tcpUDP, pfx(1), pfx(2)), []wire.FilterRule{}, []string{"planner", "planner2"}},
		{"search2",
			append(withPeers(tcpUDP, pfx(1), pfx(2)), withPeers([]wire.FilterRule{mesh}, pfx(5))...),
			withPeers([]wire.FilterRule{mesh}, pfx(5)),
			[]string{"planner", "planner2", "search3"}},
		{"writer", []wire.FilterRule{}, []wire.FilterRule{}, nil},
	}
	for _, tc := range cases {
		i, _ := ix.Lookup(tc.self)
		f := ix.Filter(i)
		if f.PolicyVersion != 7 {
			t.Errorf("%s: version %d", tc.self, f.PolicyVersion)
		}
		if !reflect.DeepEqual(f.Inbound, tc.in) {
			t.Errorf("%s inbound:\n got %+v\nwant %+v", tc.self, f.Inbound, tc.in)
		}
		if !reflect.DeepEqual(f.Outbound, tc.out) {
			t.Errorf("%s outbound:\n got %+v\nwant %+v", tc.self, f.Outbound, tc.out)
		}
		r := ix.Reachable(i)
		var names []string
		for j, n := range nodes {
			if r.Has(j) {
				names = append(names, n.Name)
			}
		}
		if !slices.Equal(names, tc.reach) || r.Len() != len(tc.reach) {
			t.Errorf("%s reachable %v, want %v", tc.self, names, tc.reach)
		}
		if got := Compile(p, nodes, tc.self); !reflect.DeepEqual(got.Inbound, f.Inbound) || !reflect.DeepEqual(got.Outbound, f.Outbound) {
			t.Errorf("%s: Compile differs from Index.Filter", tc.self)
		}
	}
	if Compile(p, nodes, "ghost") != nil {
		t.Error("Compile for an unknown node must be nil (allows nothing)")
	}
	if d, err := ix.Decide("planner2", "search3", "tcp", 9000); err != nil || !d.Allow {
		t.Errorf("Index.Decide: %+v %v", d, err)
	}
	if _, err := ix.Decide("ghost", "search", "tcp", 1); err == nil {
		t.Error("Index.Decide of an unknown node must fail")
	}
}

func TestCompileAllUsesOverlayPrefixes(t *testing.T) {
	nodes := []Node{node("a", 1), node("b", 2), node("c", 3)}
	p4, p6 := netip.MustParsePrefix("100.96.0.0/12"), netip.MustParsePrefix("fd12::/48")
	ix := NewIndex(Default(), nodes, Options{Prefix4: p4, Prefix6: p6})
	f := ix.Filter(0)
	want := []wire.FilterRule{{Rule: "allow-all", Peers: []string{"100.96.0.0/12", "fd12::/48"}}}
	if !reflect.DeepEqual(f.Inbound, want) || !reflect.DeepEqual(f.Outbound, want) {
		t.Errorf("default with prefixes: %+v", f)
	}
	if r := ix.Reachable(0); r.Len() != 2 || r.Has(0) {
		t.Errorf("reachable %v", r)
	}
	// Without prefixes, every other node is listed and self is not.
	f = NewIndex(Default(), nodes, Options{}).Filter(1)
	wantPeers := slices.Concat(pfx(1), pfx(3))
	if len(f.Inbound) != 1 || !slices.Equal(f.Inbound[0].Peers, wantPeers) || !slices.Equal(f.Outbound[0].Peers, wantPeers) {
		t.Errorf("default without prefixes: %+v", f)
	}
}

func TestShapes(t *testing.T) {
	cases := []struct {
		ports string
		want  []shape
	}{
		{`["*"]`, []shape{{}}},
		{`[tcp]`, []shape{{protos: []string{"tcp"}}}},
		{`[tcp, udp]`, []shape{{protos: []string{"tcp", "udp"}}}},
		{`[tcp:53, udp:53]`, []shape{{protos: []string{"tcp", "udp"}, ports: []wire.PortRange{{First: 53, Last: 53}}}}},
		{`[tcp:53, udp]`, []shape{{protos: []string{"tcp"}, ports: []wire.PortRange{{First: 53, Last: 53}}}, {protos: []string{"udp"}}}},
		{`[tcp:1, "tcp:*"]`, []shape{{protos: []string{"tcp"}}}},
		{`[icmp]`, []shape{{protos: []string{"icmp"}}}},
	}
	for _, tc := range cases {
		p := mustParse(t, "rules:\n  - {name: r, from: [a], to: [b], ports: "+tc.ports+"}\n")
		if got := shapes(p.Rules[0].Ports); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.ports, got, tc.want)
		}
	}
}

// benchPolicy has a few rules of each kind over nodes in 20 teams.
const benchPolicy = `groups:
  ops: [tag:ops, admin]
  front: [tag:team-1, tag:team-2, tag:team-3]
rules:
  - {name: ops-ssh, from: [group:ops], to: ["*"], ports: [tcp:22]}
  - {name: front-to-back, from: [group:front], to: [tag:team-4, tag:team-5], ports: [tcp:8080, tcp:9000-9100]}
  - {name: dns, from: ["*"], to: [tag:dns], ports: [udp:53, tcp:53]}
  - {name: team-1-mesh, from: [tag:team-1], to: [tag:team-1]}
  - {name: metrics, from: [prometheus], to: ["*"], ports: [tcp:9100]}
`

func benchNodes(n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		tags := []string{fmt.Sprintf("tag:team-%d", i%20)}
		if i%50 == 0 {
			tags = append(tags, "tag:ops")
		}
		if i%100 == 1 {
			tags = append(tags, "tag:dns")
		}
		nodes[i] = Node{Name: fmt.Sprintf("agent-%05d", i), Tags: tags, Addrs: []netip.Addr{
			netip.AddrFrom4([4]byte{100, 96, byte(i >> 8), byte(i)}),
			netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x12, 14: byte(i >> 8), 15: byte(i)}),
		}}
	}
	nodes[0].Name, nodes[1].Name = "admin", "prometheus"
	return nodes
}

// BenchmarkCompile measures what a policy or node change costs the
// coordinator: building the index for all nodes, then every node's Filter
// and reachable set (one full fan-out).
func BenchmarkCompile(b *testing.B) {
	p := mustParse(b, benchPolicy)
	for _, n := range []int{1000, 5000} {
		nodes := benchNodes(n)
		opt := Options{Prefix4: netip.MustParsePrefix("100.96.0.0/12"), Prefix6: netip.MustParsePrefix("fd12::/48")}
		b.Run(fmt.Sprintf("nodes=%d/index", n), func(b *testing.B) {
			for b.Loop() {
				NewIndex(p, nodes, opt)
			}
		})
		b.Run(fmt.Sprintf("nodes=%d/all-filters", n), func(b *testing.B) {
			for b.Loop() {
				ix := NewIndex(p, nodes, opt)
				for i := range nodes {
					ix.Filter(i)
					ix.Reachable(i)
				}
			}
		})
	}
}
