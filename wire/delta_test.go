package wire

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func testNode(name string) Node {
	return Node{Name: name, DID: "did:key:" + name, WGKey: "k-" + name}
}

func names(ns []Node) string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return strings.Join(out, ",")
}

func TestDeltaApply(t *testing.T) {
	base := &Map{Serial: 7, Self: testNode("self"), Peers: []Node{testNode("b"), testNode("d"), testNode("f")}}
	renamed := testNode("z")
	renamed.DID = "did:key:b" // b renamed to z: same identity
	changed := testNode("f")
	changed.Online = true
	self := testNode("self")
	self.Tags = []string{"tag:new"}
	relays := []Relay{}
	d := &Delta{
		Base: 7, Serial: 9, Issued: time.Unix(9, 0),
		Self:   &self,
		Upsert: []Node{renamed, testNode("a"), changed},
		Remove: []string{"did:key:d"},
		Relays: &relays,
		Filter: &Filter{PolicyVersion: 3},
	}
	got, err := base.Apply(d)
	if err != nil {
		t.Fatal(err)
	}
	if names(got.Peers) != "a,f,z" || !got.Peers[1].Online || got.Serial != 9 || got.Self.Tags[0] != "tag:new" ||
		got.Filter.PolicyVersion != 3 || got.Relays == nil {
		t.Fatalf("applied map: peers %s (f online %v), serial %d, self %+v, filter %+v, relays %v",
			names(got.Peers), got.Peers[1].Online, got.Serial, got.Self, got.Filter, got.Relays)
	}
	if names(base.Peers) != "b,d,f" || base.Serial != 7 || base.Peers[2].Online {
		t.Fatalf("Apply changed its input: %s serial %d", names(base.Peers), base.Serial)
	}
	// Fields left out are unchanged.
	same, err := got.Apply(&Delta{Base: 9, Serial: 9})
	if err != nil || names(same.Peers) != "a,f,z" || same.Filter.PolicyVersion != 3 {
		t.Fatalf("empty delta: %v %v", same, err)
	}

	for name, bad := range map[string]*Delta{
		"other base":       {Base: 6, Serial: 9},
		"serial backwards": {Base: 7, Serial: 6},
		"self identity":    {Base: 7, Serial: 8, Self: &Node{Name: "self", DID: "did:key:other"}},
		"self as peer":     {Base: 7, Serial: 8, Upsert: []Node{testNode("self")}},
		"peer twice":       {Base: 7, Serial: 8, Upsert: []Node{testNode("a"), testNode("a")}},
		"upsert removed":   {Base: 7, Serial: 8, Upsert: []Node{testNode("b")}, Remove: []string{"did:key:b"}},
	} {
		if _, err := base.Apply(bad); err == nil {
			t.Errorf("%s: applied, want an error", name)
		} else if name == "other base" && !errors.Is(err, ErrDeltaBase) {
			t.Errorf("%s: %v, want ErrDeltaBase", name, err)
		}
	}
}

func TestDeltaSignatures(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	payload, _ := json.Marshal(Delta{Base: 1, Serial: 2, Remove: []string{"did:key:x"}})
	s := SignDeltaPayload(key, payload)
	d, err := s.VerifyDelta(pub)
	if err != nil || d.Serial != 2 || !slices.Equal(d.Remove, []string{"did:key:x"}) {
		t.Fatalf("VerifyDelta: %+v, %v", d, err)
	}
	// A delta never passes for a map, nor a map for a delta.
	if _, err := s.Verify(pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("delta verified as a map: %v", err)
	}
	m, _ := Sign(key, &Map{Serial: 2})
	if _, err := m.VerifyDelta(pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("map verified as a delta: %v", err)
	}
	s.Payload = append([]byte(nil), s.Payload...)
	s.Payload[len(s.Payload)-2] ^= 1
	if _, err := s.VerifyDelta(pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered delta: %v", err)
	}
}
