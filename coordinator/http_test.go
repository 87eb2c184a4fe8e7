package coordinator

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

func TestRequestRefusals(t *testing.T) {
	h := newHarness(t, nil)
	member := newTestNode(t, h.c)
	member.enroll(h.token(wire.CreateTokenRequest{}), "member")
	tok := h.token(wire.CreateTokenRequest{})
	enrollBody := func(n *testNode) []byte {
		return mustJSON(t, wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, Token: tok, Name: "newbie", WGKey: n.wg})
	}

	tests := []struct {
		name   string
		path   string
		body   func(n *testNode) []byte
		mod    func(r *http.Request)
		status int
		code   string
		msgs   []string
	}{
		{
			name: "oversized body", path: wire.PathEnroll,
			body:   func(*testNode) []byte { return bytes.Repeat([]byte(" "), wire.MaxBodyBytes+1) },
			status: http.StatusRequestEntityTooLarge, code: wire.CodeTooLarge, msgs: []string{"larger than"},
		},
		{
			name: "garbled JSON", path: wire.PathEnroll,
			body:   func(*testNode) []byte { return []byte(`{"name": "x",`) },
			status: http.StatusBadRequest, code: wire.CodeBadRequest, msgs: []string{"bad JSON"},
		},
		{
			name: "trailing data", path: wire.PathEnroll,
			body:   func(n *testNode) []byte { return append(enrollBody(n), []byte(`{}`)...) },
			status: http.StatusBadRequest, code: wire.CodeBadRequest, msgs: []string{"trailing"},
		},
		{
			name: "unknown JSON field", path: wire.PathEnroll,
			body:   func(*testNode) []byte { return []byte(`{"name":"x","admin":true}`) },
			status: http.StatusBadRequest, code: wire.CodeBadRequest, msgs: []string{"unknown field"},
		},
		{
			name: "bad signature", path: wire.PathEnroll, body: enrollBody,
			mod:    func(r *http.Request) { r.Header.Set(wire.HeaderSignature, strings.Repeat("A", 86)) },
			status: http.StatusUnauthorized, code: wire.CodeUnauthorized, msgs: []string{"does not verify"},
		},
		{
			name: "body swapped after signing", path: wire.PathEnroll,
			body: enrollBody,
			mod: func(r *http.Request) {
				b := []byte(`{"protocol_version":1,"name":"evil","wg_key":"x"}`)
				r.Body, r.ContentLength = readCloser(b), int64(len(b))
			},
			status: http.StatusUnauthorized, code: wire.CodeUnauthorized, msgs: []string{"does not verify"},
		},
		{
			name: "clock skew", path: wire.PathEnroll, body: enrollBody,
			mod: func(r *http.Request) {
				r.Header.Set(wire.HeaderTime, "1000000000")
			},
			status: http.StatusUnauthorized, code: wire.CodeUnauthorized, msgs: []string{"check the node's clock"},
		},
		{
			name: "version 99", path: wire.PathEnroll, body: enrollBody,
			mod:    func(r *http.Request) { r.Header.Set(wire.HeaderProtocol, "99") },
			status: http.StatusBadRequest, code: wire.CodeVersion, msgs: []string{"99", "speaks " + strconv.Itoa(wire.ProtocolVersion)},
		},
		{
			name: "version header missing", path: wire.PathEnroll, body: enrollBody,
			mod:    func(r *http.Request) { r.Header.Del(wire.HeaderProtocol) },
			status: http.StatusBadRequest, code: wire.CodeVersion, msgs: []string{wire.HeaderProtocol, "speaks control protocol " + strconv.Itoa(wire.ProtocolVersion), "upgrade the client"},
		},
		{
			name: "body version 99", path: wire.PathEnroll,
			body: func(n *testNode) []byte {
				return mustJSON(t, wire.EnrollRequest{ProtocolVersion: 99, Token: tok, Name: "newbie", WGKey: n.wg})
			},
			status: http.StatusBadRequest, code: wire.CodeVersion, msgs: []string{"99"},
		},
		{
			name: "bad WireGuard key", path: wire.PathEnroll,
			body: func(n *testNode) []byte {
				return mustJSON(t, wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, Token: tok, Name: "newbie", WGKey: "short"})
			},
			status: http.StatusBadRequest, code: wire.CodeBadRequest, msgs: []string{"WireGuard key"},
		},
		{
			name: "bad name", path: wire.PathEnroll,
			body: func(n *testNode) []byte {
				return mustJSON(t, wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, Token: tok, Name: "Bad_Name", WGKey: n.wg})
			},
			status: http.StatusBadRequest, code: wire.CodeBadRequest, msgs: []string{"DNS label"},
		},
		{
			name: "update from unenrolled node", path: wire.PathUpdate,
			body:   func(n *testNode) []byte { return mustJSON(t, wire.UpdateRequest{WGKey: n.wg}) },
			status: http.StatusUnauthorized, code: wire.CodeUnauthorized, msgs: []string{"node not enrolled; join with a token"},
		},
		{
			name: "unknown path", path: "/v1/nope",
			body:   func(*testNode) []byte { return nil },
			status: http.StatusNotFound, code: wire.CodeNotFound, msgs: []string{"/v1/nope"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNode(t, h.c)
			before := h.c.Stats().Refused[tt.code]
			status, _, er := n.do(http.MethodPost, tt.path, tt.body(n), tt.mod)
			if status != tt.status || er.Code != tt.code {
				t.Fatalf("got %d %s %q, want %d %s", status, er.Code, er.Error, tt.status, tt.code)
			}
			for _, m := range tt.msgs {
				if !strings.Contains(er.Error, m) {
					t.Errorf("message %q does not mention %q", er.Error, m)
				}
			}
			if er.ProtocolVersion != wire.ProtocolVersion {
				t.Errorf("ErrorResponse.ProtocolVersion = %d", er.ProtocolVersion)
			}
			if got := h.c.Stats().Refused[tt.code]; got != before+1 {
				t.Errorf("Refused[%s] = %d, want %d", tt.code, got, before+1)
			}
			if !strings.Contains(h.logs.String(), "reason="+tt.code) {
				t.Errorf("no log line with reason=%s", tt.code)
			}
		})
	}
	if got := h.nodeCount(); got != 1 {
		t.Errorf("node count %d after refusals, want 1", got)
	}
}

func TestUpdateLimits(t *testing.T) {
	h := newHarness(t, nil)
	n := newTestNode(t, h.c)
	n.enroll(h.token(wire.CreateTokenRequest{}), "n")
	var eps []string
	for i := range maxEndpoints + 1 {
		eps = append(eps, `"127.0.0.1:`+itoa(1000+i)+`"`)
	}
	body := []byte(`{"wg_key":"` + n.wg + `","endpoints":[` + strings.Join(eps, ",") + `]}`)
	status, _, er := n.do(http.MethodPost, wire.PathUpdate, body, nil)
	if status != http.StatusBadRequest || !strings.Contains(er.Error, "at most 16") {
		t.Fatalf("17 endpoints: %d %q, want 400 at most 16", status, er.Error)
	}
}
