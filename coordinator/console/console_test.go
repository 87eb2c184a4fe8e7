package console

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// fakeCore is a Core without a coordinator: one admin secret, fixed nodes
// and tokens, and a record of what was refused and created.
type fakeCore struct {
	mu      sync.Mutex
	refused []string // codes
	created []wire.CreateTokenRequest
	nodes   []wire.Node
	limit   bool // AllowLogin refuses
}

func (f *fakeCore) Enter() bool { return true }
func (f *fakeCore) Leave()      {}
func (f *fakeCore) Refused(r *http.Request, code, reason string) {
	f.mu.Lock()
	f.refused = append(f.refused, code)
	f.mu.Unlock()
}
func (f *fakeCore) AdminSecretOK(s string) bool { return s == "sesame" }
func (f *fakeCore) AllowLogin(*http.Request) (bool, string) {
	if f.limit {
		return false, "7"
	}
	return true, ""
}
func (f *fakeCore) Serial() uint64     { return 1 }
func (f *fakeCore) Nodes() []wire.Node { return f.nodes }
func (f *fakeCore) Tokens() ([]store.TokenRecord, error) {
	return []store.TokenRecord{{ID: "t1", Created: time.Unix(1, 0), Expires: time.Now().Add(time.Hour)}}, nil
}
func (f *fakeCore) CreateToken(req wire.CreateTokenRequest) (wire.CreateTokenResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(req.Tags) > 0 && req.Tags[0] == "bad" {
		return wire.CreateTokenResponse{}, &wire.APIError{Status: http.StatusBadRequest, Code: wire.CodeBadRequest, Message: "tag \"bad\" is not valid"}
	}
	f.created = append(f.created, req)
	return wire.CreateTokenResponse{Token: "agentnet-join-v1.x", ID: "t2"}, nil
}
func (f *fakeCore) RevokeToken(string) error { return nil }

func newTest(t *testing.T, f *fakeCore) http.Handler {
	t.Helper()
	con, err := New(Config{Core: f, WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return con.Handler(http.NotFoundHandler())
}

func do(h http.Handler, method, path string, form url.Values, cookie *http.Cookie) *httptest.ResponseRecorder {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	r := httptest.NewRequest(method, "https://coord.test"+path, body)
	r.RemoteAddr = "192.0.2.1:4000"
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		r.AddCookie(cookie)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestLoginAndCSRF walks a session through the console with a fake Core:
// a wrong secret is refused under CodeLogin, the right one sets the
// cookie, a POST without the CSRF token is refused under CodeCSRF, one
// with it creates a token, and a Core refusal is shown on the page.
func TestLoginAndCSRF(t *testing.T) {
	f := &fakeCore{}
	h := newTest(t, f)
	if w := do(h, "GET", "/console/agents", nil, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/console/login" {
		t.Fatalf("agents without a session: %d %q", w.Code, w.Header().Get("Location"))
	}
	if w := do(h, "POST", "/console/login", url.Values{"secret": {"guess"}}, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", w.Code)
	}
	w := do(h, "POST", "/console/login", url.Values{"secret": {"sesame"}}, nil)
	var ck *http.Cookie
	for _, c := range w.Result().Cookies() {
		if c.Name == CookieName {
			ck = c
		}
	}
	if w.Code != http.StatusSeeOther || ck == nil || !ck.Secure || !ck.HttpOnly {
		t.Fatalf("login: %d, cookie %+v", w.Code, ck)
	}
	page := do(h, "GET", "/console/tokens", nil, ck)
	if page.Code != http.StatusOK || !strings.Contains(page.Body.String(), "t1") {
		t.Fatalf("tokens page: %d", page.Code)
	}
	csrf := strings.SplitN(strings.SplitN(page.Body.String(), `name="csrf" value="`, 2)[1], `"`, 2)[0]
	if w := do(h, "POST", "/console/tokens", url.Values{"tags": {"tag:a"}}, ck); w.Code != http.StatusForbidden {
		t.Fatalf("POST without CSRF: %d", w.Code)
	}
	if w := do(h, "POST", "/console/tokens", url.Values{"tags": {"tag:a"}, "csrf": {csrf}}, ck); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "agentnet-join-v1.x") {
		t.Fatalf("POST with CSRF: %d", w.Code)
	}
	if w := do(h, "POST", "/console/tokens", url.Values{"tags": {"bad"}, "csrf": {csrf}}, ck); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "is not valid") {
		t.Fatalf("refused create: %d", w.Code)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if strings.Join(f.refused, ",") != CodeLogin+","+CodeCSRF || len(f.created) != 1 || f.created[0].Tags[0] != "tag:a" {
		t.Errorf("refused %v, created %+v", f.refused, f.created)
	}
}

func TestLoginRateLimited(t *testing.T) {
	f := &fakeCore{limit: true}
	w := do(newTest(t, f), "POST", "/console/login", url.Values{"secret": {"sesame"}}, nil)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "7" || len(w.Result().Cookies()) != 0 {
		t.Fatalf("limited login: %d, Retry-After %q, cookies %v", w.Code, w.Header().Get("Retry-After"), w.Result().Cookies())
	}
	if len(f.refused) != 1 || f.refused[0] != wire.CodeRateLimited {
		t.Errorf("refused %v", f.refused)
	}
}

func TestNewGraph(t *testing.T) {
	var nodes []wire.Node
	for i, name := range []string{"a", "b", "c"} {
		nodes = append(nodes, wire.Node{Name: name, IPv4: netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}), Online: name != "b"})
	}
	g := newGraph(nodes)
	if len(g.Nodes) != 3 || len(g.Paths) != 1 || g.Paths[0] != (GraphPath{A: "a", B: "c", Kind: "direct"}) {
		t.Fatalf("graph %+v", g)
	}
	v := g.view()
	if x, y := v.Placed[0].X, v.Placed[0].Y; x != mapSize/2 || y != mapSize/2-mapRadius {
		t.Errorf("first node at %v,%v, want the top of the ring", x, y)
	}
}

func TestParseTTL(t *testing.T) {
	for in, want := range map[string]time.Duration{"30m": 30 * time.Minute, "7d": 7 * 24 * time.Hour, "12h": 12 * time.Hour} {
		if got, err := parseTTL(in); err != nil || got != want {
			t.Errorf("parseTTL(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseTTL("soon"); err == nil {
		t.Error("parseTTL(soon) accepted")
	}
}
