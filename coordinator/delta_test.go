package coordinator

import (
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// wholeMapNow is the map a node would get built from scratch now, decoded.
func wholeMapNow(t *testing.T, c *Coordinator, did string) *wire.Map {
	t.Helper()
	s, _, err := c.mapFor(did)
	if err != nil {
		t.Fatal(err)
	}
	var m wire.Map
	if err := json.Unmarshal(s.Payload, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// sameMap compares two maps but for Issued and Serial (a change that
// leaves a node's map as it was sends it nothing, so its serial stays).
func sameMap(a, b *wire.Map) bool {
	x, y := *a, *b
	x.Issued, y.Issued = time.Time{}, time.Time{}
	x.Serial, y.Serial = 0, 0
	if len(x.Peers) == 0 && len(y.Peers) == 0 {
		x.Peers, y.Peers = nil, nil
	}
	xj, _ := json.Marshal(x)
	yj, _ := json.Marshal(y)
	return reflect.DeepEqual(xj, yj)
}

// TestStreamDeltasMatchWholeMaps: through joins, endpoint updates, online
// flips, tag and policy changes, removal and revocation, the map a node
// builds from its first map and the deltas after it is always the map the
// coordinator would build for it from scratch; deltas carry only the
// change, and a policy change sends a whole map.
func TestStreamDeltasMatchWholeMaps(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	planTok := h.token(wire.CreateTokenRequest{Reusable: true, Tags: []string{"tag:planning"}})
	nodes := map[string]*testNode{}
	enroll := func(name, token string) *testNode {
		n := newTestNode(t, h.c)
		n.enroll(token, name)
		nodes[name] = n
		return n
	}
	enroll("planner", planTok)
	enroll("search", tok)
	enroll("writer", tok)
	s := nodes["planner"].openDeltaStream(h.c.PublicKey())

	var serial uint64
	step := func(what string) {
		t.Helper()
		m := s.cur
		if m == nil || !sameMap(m, wholeMapNow(t, h.c, nodes["planner"].did)) {
			m = s.waitMap(5*time.Second, what, func(m *wire.Map) bool {
				return sameMap(m, wholeMapNow(t, h.c, nodes["planner"].did))
			})
		}
		if m.Serial < serial {
			t.Errorf("%s: serial went back from %d to %d", what, serial, m.Serial)
		}
		serial = m.Serial
	}
	step("first map")

	enroll("reader", tok)
	step("a join")
	deltasAfterJoin := s.deltas
	if deltasAfterJoin == 0 || s.maps != 1 {
		t.Fatalf("after a join: %d maps, %d deltas; want 1 map, then deltas", s.maps, s.deltas)
	}

	nodes["search"].update(netip.MustParseAddrPort("198.51.100.7:51820"))
	step("an endpoint update")

	ws := nodes["writer"].openStream(h.c.PublicKey())
	step("writer online")
	ws.close()
	step("writer offline")

	if _, err := h.admin.SetNodeTags(ctx, "search", []string{"tag:search"}); err != nil {
		t.Fatal(err)
	}
	step("search's tags")

	if _, err := h.admin.SetPolicy(ctx, wire.PolicySetRequest{Text: planPolicy, Source: "plan.yaml"}); err != nil {
		t.Fatal(err)
	}
	mapsBefore := s.maps
	step("a new policy (writer and reader leave planner's map)")
	if s.maps == mapsBefore {
		t.Errorf("a policy change came as deltas; want a whole map")
	}
	if got := peerNames(s.cur); got != "search" {
		t.Errorf("peers under the plan policy: %q, want search", got)
	}

	if _, err := h.admin.SetNodeTags(ctx, "writer", []string{"tag:planning"}); err != nil {
		t.Fatal(err)
	}
	step("writer joins group planners (still no rule to planner)")

	if err := h.admin.DeleteNode(ctx, "search"); err != nil {
		t.Fatal(err)
	}
	step("search removed")
	if len(s.cur.Peers) != 0 {
		t.Errorf("peers after search was removed: %s", peerNames(s.cur))
	}
	if s.maps != mapsBefore+1 {
		t.Errorf("%d whole maps after the policy change, want 1 (deltas since)", s.maps-mapsBefore)
	}
	t.Logf("%d whole maps, %d deltas", s.maps, s.deltas)
}

// TestStreamDeltasRevocation: a revoked peer leaves the map by a delta
// naming its DID.
func TestStreamDeltasRevocation(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	s := a.openDeltaStream(h.c.PublicKey())
	s.waitMap(5*time.Second, "bravo", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return ok })
	if _, err := h.admin.RevokeNode(context.Background(), "bravo", "test"); err != nil {
		t.Fatal(err)
	}
	s.waitMap(5*time.Second, "bravo gone", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return !ok })
	if s.deltas == 0 {
		t.Errorf("revocation came as a whole map; want a delta")
	}
	h.waitStats("a delta sent", func(st Stats) bool { return st.DeltasSent > 0 })
}

// TestSnapshotIncremental: a refresh re-reads only the nodes written since
// the last one and carries the rest over, encodings included.
func TestSnapshotIncremental(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	for _, name := range []string{"delta", "alpha", "charlie"} {
		newTestNode(t, h.c).enroll(tok, name)
	}
	s1 := h.c.snap.Load()
	if _, err := s1.encoded(0, false); err != nil {
		t.Fatal(err)
	}
	newTestNode(t, h.c).enroll(tok, "bravo")
	s2 := h.c.snap.Load()
	var got []string
	for _, n := range s2.nodes {
		got = append(got, n.Name)
	}
	if want := "alpha,bravo,charlie,delta"; peerNamesOf(got) != want {
		t.Fatalf("nodes after an incremental refresh: %s, want %s", peerNamesOf(got), want)
	}
	if s2.enc[0] != s1.enc[0] {
		t.Errorf("alpha's encoding was not carried over")
	}
	ids, ok := s2.changedSince(s1.gen)
	if !ok || len(ids) != 1 || s2.dids[ids[0]] != s2.nodes[1].DID {
		t.Errorf("changedSince: %v %v, want bravo's id", ids, ok)
	}
	for i, id := range s2.ids {
		if int(s2.pos[id]) != i {
			t.Errorf("pos[%d] = %d, want %d", id, s2.pos[id], i)
		}
	}
}

func peerNamesOf(names []string) string {
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ","
		}
		out += n
	}
	return out
}
