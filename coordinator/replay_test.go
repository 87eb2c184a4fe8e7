package coordinator

import (
	"bytes"
	"encoding/json"
	"github.com/agentnet/agentnet/internal/clocktest"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// send sends a copy of the signed request r (same method, URL and
// headers) with body, as a replaying attacker would, and returns the
// status and refusal. The response body is not read beyond its first
// line, so an accepted stream is not held open.
func (n *testNode) send(r *http.Request, body []byte) (int, wire.ErrorResponse) {
	n.t.Helper()
	c := r.Clone(r.Context())
	c.Body = io.NopCloser(bytes.NewReader(body))
	c.ContentLength = int64(len(body))
	resp, err := n.hc.Do(c)
	if err != nil {
		n.t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	var er wire.ErrorResponse
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &er)
		if resp.Header.Get("Retry-After") != "" {
			er.Error += " (Retry-After " + resp.Header.Get("Retry-After") + ")"
		}
	}
	return resp.StatusCode, er
}

// A byte-identical signed /v1/update is accepted once (issue 17, item 3:
// it was accepted again anywhere in the ±5 min window): the replay is
// refused with 409 replayed and counted, and a freshly signed request
// still works.
func TestReplayedUpdateRefused(t *testing.T) {
	h := newHarness(t, nil)
	n := newTestNode(t, h.c)
	n.enroll(h.token(wire.CreateTokenRequest{}), "alpha")
	body := mustJSON(t, wire.UpdateRequest{WGKey: n.wg, Endpoints: []netip.AddrPort{epA}})
	r := n.request(http.MethodPost, wire.PathUpdate, body, nil)
	if status, er := n.send(r, body); status != http.StatusOK {
		t.Fatalf("first update: %d %s %s", status, er.Code, er.Error)
	}
	if status, er := n.send(r, body); status != http.StatusConflict || er.Code != wire.CodeReplayed {
		t.Fatalf("replayed update: %d %s %q, want 409 %s", status, er.Code, er.Error, wire.CodeReplayed)
	}
	if got := h.c.Stats().Refused[wire.CodeReplayed]; got != 1 {
		t.Errorf("Refused[%s] = %d, want 1", wire.CodeReplayed, got)
	}
	n.update(epA) // a fresh signature, a fresh nonce
}

// A stream request's signature covers its query (it did not: replayed with
// another query it got 200 and the map), and a stream request is accepted
// once.
func TestReplayedStreamRefused(t *testing.T) {
	h := newHarness(t, nil)
	n := newTestNode(t, h.c)
	n.enroll(h.token(wire.CreateTokenRequest{}), "alpha")
	r := n.request(http.MethodGet, wire.PathStream, nil, nil)
	other := r.Clone(r.Context())
	other.URL.RawQuery = "deltas=1"
	if status, er := n.send(other, nil); status != http.StatusUnauthorized || er.Code != wire.CodeUnauthorized {
		t.Errorf("stream request replayed with another query: %d %s %q, want 401 %s", status, er.Code, er.Error, wire.CodeUnauthorized)
	}
	if status, er := n.send(r, nil); status != http.StatusOK {
		t.Fatalf("stream request: %d %s %s", status, er.Code, er.Error)
	}
	if status, er := n.send(r, nil); status != http.StatusConflict || er.Code != wire.CodeReplayed {
		t.Errorf("stream request replayed: %d %s %q, want 409 %s", status, er.Code, er.Error, wire.CodeReplayed)
	}
	// A signed query is accepted.
	q := n.request(http.MethodGet, wire.PathStream+"?deltas=1", nil, nil)
	if status, er := n.send(q, nil); status != http.StatusOK {
		t.Errorf("stream request with a signed query: %d %s %s", status, er.Code, er.Error)
	}
}

// An enrollment is accepted once; a refused one leaves nothing in the
// cache (strangers cannot fill it).
func TestReplayedEnrollRefused(t *testing.T) {
	h := newHarness(t, nil)
	n := newTestNode(t, h.c)
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	body := mustJSON(t, wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, Token: tok, Name: "alpha", WGKey: n.wg})
	r := n.request(http.MethodPost, wire.PathEnroll, body, nil)
	if status, er := n.send(r, body); status != http.StatusOK {
		t.Fatalf("enroll: %d %s %s", status, er.Code, er.Error)
	}
	if status, er := n.send(r, body); status != http.StatusConflict || er.Code != wire.CodeReplayed {
		t.Errorf("replayed enrollment: %d %s %q, want 409 %s", status, er.Code, er.Error, wire.CodeReplayed)
	}
	before := h.c.replay.len()
	stranger := newTestNode(t, h.c)
	if _, status, _ := stranger.tryEnroll("not-a-token", "x"); status != http.StatusBadRequest {
		t.Fatalf("enroll with a bad token: %d", status)
	}
	if got := h.c.replay.len(); got != before {
		t.Errorf("replay cache holds %d nonces after a refused enrollment, want %d", got, before)
	}
}

// The cache is bounded per signer and in total: over a bound a request is
// refused with 429 rate_limited and a Retry-After, and once the window
// has passed (fake clock) its entries are gone and requests are accepted
// again.
func TestReplayCacheBounds(t *testing.T) {
	clock := clocktest.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	h := newHarness(t, func(c *Config) { c.Now = clock.Now; c.replayPerSigner = 3; c.replayTotal = 5 })
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a, b := newTestNode(t, h.c), newTestNode(t, h.c)
	a.enroll(tok, "alpha") // 1 nonce each
	b.enroll(tok, "bravo")
	post := func(n *testNode) (int, wire.ErrorResponse) {
		body := mustJSON(t, wire.UpdateRequest{WGKey: n.wg})
		return n.send(n.request(http.MethodPost, wire.PathUpdate, body, nil), body)
	}
	for i := range 2 {
		if status, er := post(a); status != http.StatusOK {
			t.Fatalf("alpha update %d: %d %s %s", i, status, er.Code, er.Error)
		}
	}
	status, er := post(a) // alpha's 4th nonce: over its share of 3
	if status != http.StatusTooManyRequests || er.Code != wire.CodeRateLimited || !strings.Contains(er.Error, "Retry-After") {
		t.Fatalf("alpha over its share: %d %s %q, want 429 %s with Retry-After", status, er.Code, er.Error, wire.CodeRateLimited)
	}
	if status, er := post(b); status != http.StatusOK { // bravo: 2 of 3, 5 of 5 in all
		t.Fatalf("bravo update: %d %s %s", status, er.Code, er.Error)
	}
	if status, er := post(b); status != http.StatusTooManyRequests || er.Code != wire.CodeRateLimited {
		t.Fatalf("cache full: %d %s %q, want 429 %s", status, er.Code, er.Error, wire.CodeRateLimited)
	}
	clock.Add(wire.MaxClockSkew + 2*time.Second)
	for _, n := range []*testNode{a, b} {
		if status, er := post(n); status != http.StatusOK {
			t.Fatalf("after the window: %d %s %s", status, er.Code, er.Error)
		}
	}
	if got := h.c.replay.len(); got != 2 {
		t.Errorf("replay cache holds %d nonces after the window, want 2", got)
	}
}

// A version-1 client (no nonce, signature without query and nonce) is
// refused with version_mismatch and told to upgrade.
func TestOldProtocolClientRefused(t *testing.T) {
	h := newHarness(t, nil)
	n := newTestNode(t, h.c)
	n.enroll(h.token(wire.CreateTokenRequest{}), "alpha")
	body := mustJSON(t, wire.UpdateRequest{WGKey: n.wg})
	_, _, er := n.do(http.MethodPost, wire.PathUpdate, body, func(r *http.Request) {
		r.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion-1))
	})
	if er.Code != wire.CodeVersion || !strings.Contains(er.Error, "upgrade the client") {
		t.Errorf("version %d client: %s %q, want %s saying to upgrade", wire.ProtocolVersion-1, er.Code, er.Error, wire.CodeVersion)
	}
}
