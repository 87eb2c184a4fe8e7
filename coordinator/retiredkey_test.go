package coordinator

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

// reencodings are other spellings of the key canon that a lenient base64
// decoder reads as the same 32 bytes: the last character's two unused bits
// set, and a line break inside.
func reencodings(canon string) []string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := len(canon) - 2 // the character before the '='
	v := strings.IndexByte(alphabet, canon[i])
	var out []string
	for bits := 1; bits <= 3; bits++ {
		out = append(out, canon[:i]+string(alphabet[v&^3|bits])+canon[i+1:])
	}
	return append(out, canon[:22]+"\n"+canon[22:])
}

// A revoked node's WireGuard key stays refused under every spelling of it
// (issue 17, item 2: flipping the unused bits of the last base64 character
// enrolled the retired key again, 200 and pushed to peers).
func TestRetiredKeyReencodedRefused(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	b.enroll(tok, "bravo")
	rec, err := h.admin.RevokeNode(context.Background(), "alpha", "test")
	if err != nil || len(rec.WGKeys) != 1 {
		t.Fatalf("RevokeNode: %+v, %v", rec, err)
	}
	retired := rec.WGKeys[0]
	for i, wg := range reencodings(retired) {
		thief := newTestNode(t, h.c)
		thief.wg = wg
		if _, status, er := thief.tryEnroll(tok, "thief"); status != http.StatusBadRequest || er.Code != wire.CodeBadRequest {
			t.Errorf("enroll with re-encoding %d %q of the revoked key: %d %s %q, want 400 %s", i, wg, status, er.Code, er.Error, wire.CodeBadRequest)
		}
		if status, er := b.postWGUpdate(wg); status != http.StatusBadRequest || er.Code != wire.CodeBadRequest {
			t.Errorf("update to re-encoding %d %q of the revoked key: %d %s %q", i, wg, status, er.Code, er.Error)
		}
	}
	// The canonical spelling is refused as retired, as before.
	thief := newTestNode(t, h.c)
	thief.wg = retired
	if _, status, er := thief.tryEnroll(tok, "thief"); status != http.StatusForbidden || er.Code != wire.CodeKeyRetired {
		t.Errorf("enroll with the revoked key: %d %s %q", status, er.Code, er.Error)
	}
	nodes, err := h.admin.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if k, err := wire.ParseWGKey(n.WGKey); err != nil || wire.WGKeyString(k) == retired || n.Name == "thief" {
			t.Errorf("node %s holds key %q (%v) after the refusals", n.Name, n.WGKey, err)
		}
	}
}
