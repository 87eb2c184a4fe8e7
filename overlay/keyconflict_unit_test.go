package overlay

import (
	"testing"

	"github.com/agentnet/agentnet/wire"
)

func TestDropKeyConflicts(t *testing.T) {
	key := func(b byte) ([32]byte, string) {
		var k [32]byte
		k[0], k[31] = b, 0x40
		return k, wire.WGKeyString(k)
	}
	self, selfS := key(1)
	_, k2 := key(2)
	_, k3 := key(3)
	_, k4 := key(4)
	node := func(name, k string) wire.Node { return wire.Node{Name: name, WGKey: k} }
	names := func(ns []wire.Node) (s []string) {
		for _, n := range ns {
			s = append(s, n.Name)
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		in      []wire.Node
		want    []string
		dropped int
	}{
		{"unique", []wire.Node{node("b", k2), node("c", k3)}, []string{"b", "c"}, 0},
		{"shared key: both go", []wire.Node{node("b", k2), node("m", k2), node("c", k3)}, []string{"c"}, 2},
		{"three share", []wire.Node{node("b", k2), node("m", k2), node("n", k2)}, nil, 3},
		{"our key", []wire.Node{node("e", selfS), node("c", k3)}, []string{"c"}, 1},
		{"bad key kept for peerFromNode to log", []wire.Node{node("x", "nope"), node("d", k4)}, []string{"x", "d"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kept, dropped, _ := dropKeyConflicts(tc.in, self)
			if got := names(kept); dropped != tc.dropped || len(got) != len(tc.want) {
				t.Fatalf("kept %v dropped %d; want %v, %d", got, dropped, tc.want, tc.dropped)
			}
			for i, n := range names(kept) {
				if n != tc.want[i] {
					t.Fatalf("kept %v, want %v", names(kept), tc.want)
				}
			}
		})
	}
}
