package coordinator

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/agentnet/agentnet/coordinator/console"
	"github.com/agentnet/agentnet/wire"
)

// rawAdmin sends an admin request with the Authorization header exactly as
// given ("" sends none) and returns the status and refusal.
func rawAdmin(t *testing.T, h *harness, method, path, auth string, body io.Reader) (int, wire.ErrorResponse) {
	t.Helper()
	req, err := http.NewRequest(method, h.c.URL()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	if auth != "" {
		req.Header.Set(wire.HeaderAdmin, auth)
	}
	tr := &http.Transport{TLSClientConfig: wire.PinnedTLSConfig(h.c.Pin()), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var er wire.ErrorResponse
	if resp.StatusCode/100 != 2 {
		if err := json.Unmarshal(b, &er); err != nil {
			t.Fatalf("%s %s: %d body is not ErrorResponse JSON: %q", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, er
}

// TestAdminSecretCompare: every wrong secret, of every length from empty
// to twice the real one (prefixes, extensions, one character changed,
// other headers), is refused with 401 and counted; the right one passes.
// The admin check compares SHA-256 digests with subtle.ConstantTimeCompare
// (admin.go), so length and content do not change its timing.
func TestAdminSecretCompare(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RateLimits.Admin.Off = true })
	secret := h.c.AdminCred().Secret
	var wrong []string
	for n := 0; n <= 2*len(secret)+1; n++ {
		wrong = append(wrong, "Bearer "+strings.Repeat("A", n))
		switch {
		case n < len(secret):
			wrong = append(wrong, "Bearer "+secret[:n])
		case n > len(secret):
			wrong = append(wrong, "Bearer "+secret+strings.Repeat("x", n-len(secret)))
		default:
			flip := []byte(secret)
			flip[n-1] ^= 1
			wrong = append(wrong, "Bearer "+string(flip))
		}
	}
	wrong = append(wrong, secret, "bearer "+secret, "Basic "+secret, "Bearer  "+secret, "Bearer "+secret+" ", "")
	for _, auth := range wrong {
		if status, er := rawAdmin(t, h, http.MethodGet, wire.PathAdminNodes, auth, nil); status != http.StatusUnauthorized || er.Code != wire.CodeUnauthorized {
			t.Fatalf("Authorization %q: %d %s, want 401 %s", auth, status, er.Code, wire.CodeUnauthorized)
		}
	}
	if got := h.c.Stats().Refused[wire.CodeUnauthorized]; got != uint64(len(wrong)) {
		t.Fatalf("Refused[unauthorized] = %d after %d wrong secrets", got, len(wrong))
	}
	if status, _ := rawAdmin(t, h, http.MethodGet, wire.PathAdminNodes, "Bearer "+secret, nil); status != http.StatusOK {
		t.Fatalf("right secret: %d", status)
	}
	if strings.Contains(h.logs.String(), secret) {
		t.Fatal("the admin secret appears in the log")
	}
}

// unsized hides a reader's length, so the request goes without
// Content-Length and only the server's reading limit can stop it.
type unsized struct{ io.Reader }

// TestBodyLimits: every API endpoint refuses a body over MaxBodyBytes with
// 413 too_large: declared ones before any handler runs, undeclared
// (streamed) ones when the handler reads past the limit. A body of exactly
// MaxBodyBytes is not refused for size.
func TestBodyLimits(t *testing.T) {
	h := newHarness(t, nil)
	n := newTestNode(t, h.c)
	n.enroll(h.token(wire.CreateTokenRequest{}), "n")
	big := bytes.Repeat([]byte(" "), wire.MaxBodyBytes+1)
	admin := "Bearer " + h.c.AdminCred().Secret
	for _, e := range []struct {
		method, path string
		signed       bool // node-signed; else admin
		reads        bool // the handler reads the body
	}{
		{http.MethodPost, wire.PathEnroll, true, true},
		{http.MethodPost, wire.PathUpdate, true, true},
		{http.MethodGet, wire.PathStream, true, true},
		{http.MethodPost, wire.PathAdminTokens, false, true},
		{http.MethodGet, wire.PathAdminNodes, false, false},
		{http.MethodDelete, wire.PathAdminNodes + "/n", false, false},
	} {
		for _, streamed := range []bool{false, true} {
			if streamed && !e.reads {
				continue // nothing reads it: the server discards it unread
			}
			name := e.method + " " + e.path + map[bool]string{false: " sized", true: " streamed"}[streamed]
			var body io.Reader = bytes.NewReader(big)
			if streamed {
				body = unsized{body}
			}
			var status int
			var er wire.ErrorResponse
			if e.signed {
				req := n.request(e.method, e.path, big, nil)
				req.Body, req.ContentLength = io.NopCloser(body), int64(len(big))
				if streamed {
					req.ContentLength = -1
				}
				resp, err := n.hc.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
				_ = json.Unmarshal(b, &er)
			} else {
				status, er = rawAdmin(t, h, e.method, e.path, admin, body)
			}
			if status != http.StatusRequestEntityTooLarge || er.Code != wire.CodeTooLarge || !strings.Contains(er.Error, strconv.Itoa(wire.MaxBodyBytes)) {
				t.Errorf("%s: %d %s %q, want 413 %s naming the limit", name, status, er.Code, er.Error, wire.CodeTooLarge)
			}
		}
	}
	if got := h.nodeCount(); got != 1 {
		t.Fatalf("oversized requests changed the store: %d nodes", got)
	}
	// At the limit, the size is fine (the JSON is not).
	if status, _, er := n.do(http.MethodPost, wire.PathUpdate, bytes.Repeat([]byte(" "), wire.MaxBodyBytes), nil); status != http.StatusBadRequest || er.Code != wire.CodeBadRequest {
		t.Fatalf("body of exactly MaxBodyBytes: %d %s, want 400 %s", status, er.Code, wire.CodeBadRequest)
	}
}

// TestConsoleBodyLimit: a login form over the console's limit never logs
// in, even with the right secret in it.
func TestConsoleBodyLimit(t *testing.T) {
	h := newConsoleHarness(t, nil)
	cc := newConsoleClient(t, h)
	form := url.Values{"secret": {h.c.AdminCred().Secret}, "pad": {strings.Repeat("x", console.MaxForm)}}
	resp, _ := cc.post("/console/login", form, nil)
	if resp.StatusCode == http.StatusSeeOther || len(resp.Cookies()) != 0 {
		t.Fatalf("oversized login form: %d with cookies %v, want refused without a session", resp.StatusCode, resp.Cookies())
	}
}
