package coordinator

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/wire"
)

// A WireGuard key belongs to one node, ever (issue 17, item 1: any holder
// of a join token, or any enrolled node through /v1/update, could publish
// another node's key with its own endpoint and take its traffic). The
// thief is refused with 409 key_in_use by enrollment and by update,
// counted, logged and audited; the victim keeps its key; and a removed
// node's key is not free for another identity either.
func TestKeyTakeoverRefused(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	victim, b := newTestNode(t, h.c), newTestNode(t, h.c)
	victim.enroll(tok, "victim")
	b.enroll(tok, "bravo")

	thief := newTestNode(t, h.c)
	thief.wg = victim.wg
	if _, status, er := thief.tryEnroll(tok, "thief"); status != http.StatusConflict || er.Code != wire.CodeKeyInUse {
		t.Errorf("enroll with the victim's key: %d %s %q, want 409 %s", status, er.Code, er.Error, wire.CodeKeyInUse)
	}
	if status, er := b.postWGUpdate(victim.wg); status != http.StatusConflict || er.Code != wire.CodeKeyInUse {
		t.Errorf("update to the victim's key: %d %s %q, want 409 %s", status, er.Code, er.Error, wire.CodeKeyInUse)
	}
	// The victim itself may go on publishing its key.
	victim.update(epA)

	nodes, err := h.admin.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	holders := 0
	for _, n := range nodes {
		if n.WGKey == victim.wg {
			holders++
			if n.Name != "victim" {
				t.Errorf("node %s holds the victim's key", n.Name)
			}
		}
		if n.Name == "thief" {
			t.Error("the thief was enrolled")
		}
	}
	if holders != 1 {
		t.Errorf("%d nodes hold the victim's key, want 1", holders)
	}
	if got := h.c.Stats().Refused[wire.CodeKeyInUse]; got != 2 {
		t.Errorf("Refused[%s] = %d, want 2", wire.CodeKeyInUse, got)
	}
	refusals := 0
	for _, r := range auditKinds(t, h)[audit.KindRequestRefused] {
		if r.Details["code"] == wire.CodeKeyInUse || r.Details["reason"] == wire.CodeKeyInUse {
			refusals++
		}
	}
	if refusals == 0 {
		t.Error("no request_refused audit record with code key_in_use")
	}

	// Removing the victim frees its name and addresses, not its key.
	if err := h.admin.DeleteNode(context.Background(), "victim"); err != nil {
		t.Fatal(err)
	}
	if _, status, er := thief.tryEnroll(tok, "thief"); status != http.StatusConflict || er.Code != wire.CodeKeyInUse {
		t.Errorf("enroll with a removed node's key: %d %s %q, want 409 %s", status, er.Code, er.Error, wire.CodeKeyInUse)
	}
	// The removed identity itself may come back with its own key.
	victim.enroll(tok, "victim")
}

// Concurrent enrollments of many identities with one fresh key: exactly one
// gets it, because the check and the write are one store transaction.
func TestKeyUniqueUnderRace(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	const n = 8
	key := newWGKey()
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = newTestNode(t, h.c)
		nodes[i].wg = key
	}
	statuses := make([]int, n)
	codes := make([]string, n)
	var wg sync.WaitGroup
	for i, tn := range nodes {
		wg.Go(func() {
			var er wire.ErrorResponse
			_, statuses[i], er = tn.tryEnroll(tok, "racer"+itoa(i))
			codes[i] = er.Code
		})
	}
	wg.Wait()
	ok := 0
	for i, s := range statuses {
		switch {
		case s == http.StatusOK:
			ok++
		case s != http.StatusConflict || codes[i] != wire.CodeKeyInUse:
			t.Errorf("racer %d: %d %s", i, s, codes[i])
		}
	}
	if ok != 1 {
		t.Errorf("%d enrollments got the key, want 1 (statuses %v)", ok, statuses)
	}
}
