package coordinator

import (
	"bufio"
	"encoding/json"
	"github.com/agentnet/agentnet/internal/clocktest"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator/console"
	"github.com/agentnet/agentnet/wire"
)

// consoleClient is a browser stand-in: a cookie jar, the pinned TLS config,
// redirects not followed (tests look at them), and Origin set on POSTs as a
// browser would.
type consoleClient struct {
	t    *testing.T
	h    *harness
	hc   *http.Client
	base string
	csrf string // from the last page that had a form
}

func newConsoleHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	return newHarness(t, func(cfg *Config) {
		cfg.Console = true
		if mod != nil {
			mod(cfg)
		}
	})
}

func newConsoleClient(t *testing.T, h *harness) *consoleClient {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: wire.PinnedTLSConfig(h.c.Pin())}
	t.Cleanup(tr.CloseIdleConnections)
	return &consoleClient{t: t, h: h, base: h.c.URL(), hc: &http.Client{
		Transport:     tr,
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (cc *consoleClient) do(req *http.Request) (*http.Response, string) {
	cc.t.Helper()
	resp, err := cc.hc.Do(req)
	if err != nil {
		cc.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if m := csrfRE.FindSubmatch(b); m != nil {
		cc.csrf = html.UnescapeString(string(m[1]))
	}
	return resp, string(b)
}

func (cc *consoleClient) get(path string) (*http.Response, string) {
	cc.t.Helper()
	req, err := http.NewRequest(http.MethodGet, cc.base+path, nil)
	if err != nil {
		cc.t.Fatal(err)
	}
	return cc.do(req)
}

// post sends a form with Origin set to the console's; mod may change the
// request (headers) before it is sent.
func (cc *consoleClient) post(path string, form url.Values, mod func(*http.Request)) (*http.Response, string) {
	cc.t.Helper()
	req, err := http.NewRequest(http.MethodPost, cc.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		cc.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", cc.base)
	if mod != nil {
		mod(req)
	}
	return cc.do(req)
}

// login logs in with the admin secret and loads the agents page (for its
// CSRF token).
func (cc *consoleClient) login() {
	cc.t.Helper()
	resp, body := cc.post("/console/login", url.Values{"secret": {cc.h.c.AdminCred().Secret}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/agents" {
		cc.t.Fatalf("login: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if resp, _ := cc.get("/console/agents"); resp.StatusCode != http.StatusOK {
		cc.t.Fatalf("agents after login: %d", resp.StatusCode)
	}
	if cc.csrf == "" {
		cc.t.Fatal("no CSRF token on the agents page")
	}
}

// createToken creates a token through the form and returns it.
func (cc *consoleClient) createToken(form url.Values) (tok, id string) {
	cc.t.Helper()
	form.Set("csrf", cc.csrf)
	resp, body := cc.post("/console/tokens", form, nil)
	if resp.StatusCode != http.StatusOK {
		cc.t.Fatalf("create token: %d %s", resp.StatusCode, body)
	}
	m := regexp.MustCompile(`id="new-token"[^>]*>([^<]+)</pre>`).FindStringSubmatch(body)
	if m == nil {
		cc.t.Fatalf("no new token on the page: %s", body)
	}
	tok = html.UnescapeString(m[1])
	t, err := wire.ParseToken(tok)
	if err != nil {
		cc.t.Fatalf("token from the page does not parse: %v", err)
	}
	return tok, t.ID
}

func TestConsoleLoginRequired(t *testing.T) {
	h := newConsoleHarness(t, nil)
	cc := newConsoleClient(t, h)
	for _, path := range []string{"/console/", "/console/agents", "/console/map", "/console/tokens", "/console/policy", "/console/audit"} {
		resp, _ := cc.get(path)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
			t.Errorf("GET %s without session: %d → %q, want 303 → /console/login", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := cc.get("/console/events"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("events without session: %d, want 401", resp.StatusCode)
	}
	if resp, _ := cc.post("/console/tokens", url.Values{"csrf": {"x"}}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST tokens without session: %d, want 401", resp.StatusCode)
	}
	if resp, _ := cc.get("/"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
		t.Errorf("GET / = %d → %q, want 302 → /console/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := cc.get("/console/login")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<label for="secret">`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}
	for k, want := range map[string]string{
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "default-src 'self'",
	} {
		if got := resp.Header.Get(k); !strings.HasPrefix(got, want) {
			t.Errorf("%s = %q, want %q…", k, got, want)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") {
		t.Error("login page has inline script or style")
	}
	resp, body = cc.get("/console/static/map.js")
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") || !strings.Contains(body, "EventSource") {
		t.Errorf("map.js: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("static file without CSP")
	}
	// The API is untouched: unknown paths still get its JSON 404.
	req, _ := http.NewRequest(http.MethodGet, cc.base+"/v1/nope", nil)
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	resp, body = cc.do(req)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, wire.CodeNotFound) {
		t.Errorf("API 404 = %d %s", resp.StatusCode, body)
	}
}

func TestConsoleDisabled(t *testing.T) {
	h := newHarness(t, nil)
	cc := newConsoleClient(t, h)
	for _, path := range []string{"/console/login", "/"} {
		req, _ := http.NewRequest(http.MethodGet, cc.base+path, nil)
		req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
		resp, body := cc.do(req)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, wire.CodeNotFound) {
			t.Errorf("GET %s with the console off: %d %s", path, resp.StatusCode, body)
		}
	}
}

func TestConsoleWrongPassword(t *testing.T) {
	h := newConsoleHarness(t, nil)
	cc := newConsoleClient(t, h)
	for _, secret := range []string{"", "guess", h.c.AdminCred().Secret + "x"} {
		resp, body := cc.post("/console/login", url.Values{"secret": {secret}}, nil)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `role="alert"`) || !strings.Contains(body, "not the admin secret") {
			t.Errorf("login with %q: %d %s", secret, resp.StatusCode, body)
		}
		if len(resp.Cookies()) != 0 {
			t.Errorf("failed login set cookies %v", resp.Cookies())
		}
	}
	if got := h.c.Stats().Refused[console.CodeLogin]; got != 3 {
		t.Errorf("Refused[%s] = %d, want 3", console.CodeLogin, got)
	}
	if !strings.Contains(h.logs.String(), "console request refused") || strings.Contains(h.logs.String(), "guess") {
		t.Errorf("refusal not logged, or the guess leaked into the log:\n%s", h.logs)
	}
	if resp, _ := cc.get("/console/agents"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("agents after failed logins: %d", resp.StatusCode)
	}
}

func TestConsoleLoginCookieLogout(t *testing.T) {
	clock := clocktest.New(time.Now())
	h := newConsoleHarness(t, func(cfg *Config) { cfg.Now = clock.Now })
	cc := newConsoleClient(t, h)
	resp, _ := cc.post("/console/login", url.Values{"secret": {h.c.AdminCred().Secret}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	var setCookie string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, console.CookieName+"=") {
			setCookie = v
		}
	}
	for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Strict", "Path=/console"} {
		if !strings.Contains(setCookie, "; "+attr) {
			t.Errorf("session cookie %q lacks %s", setCookie, attr)
		}
	}
	value := strings.TrimPrefix(strings.SplitN(setCookie, ";", 2)[0], console.CookieName+"=")
	if len(value) != 43 { // 32 bytes, base64url without padding
		t.Errorf("session id %q is not 32 random bytes", value)
	}
	resp, body := cc.get("/console/agents")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Log out") {
		t.Fatalf("agents after login: %d", resp.StatusCode)
	}
	if resp, _ := cc.get("/console/login"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("login page while logged in: %d, want a redirect to the console", resp.StatusCode)
	}

	// Logout needs the CSRF token too.
	if resp, _ := cc.post("/console/logout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("logout without CSRF: %d, want 403", resp.StatusCode)
	}
	resp, _ = cc.post("/console/logout", url.Values{"csrf": {cc.csrf}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Fatalf("logout: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := cc.get("/console/agents"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("agents after logout: %d, want 303", resp.StatusCode)
	}
	// The old cookie is dead on the server too, not only in this jar.
	req, _ := http.NewRequest(http.MethodGet, cc.base+"/console/agents", nil)
	req.AddCookie(&http.Cookie{Name: console.CookieName, Value: value})
	if resp, _ := cc.do(req); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("replayed session cookie after logout: %d, want 303", resp.StatusCode)
	}

	// Sessions expire after console.SessionTTL.
	cc.login()
	clock.Add(console.SessionTTL + time.Minute)
	if resp, _ := cc.get("/console/agents"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("agents after the session expired: %d, want 303", resp.StatusCode)
	}
}

func TestConsoleCSRF(t *testing.T) {
	h := newConsoleHarness(t, nil)
	cc := newConsoleClient(t, h)
	cc.login()
	good := cc.csrf
	for _, tc := range []struct {
		name string
		csrf string
		mod  func(*http.Request)
	}{
		{"no token", "", nil},
		{"wrong token", strings.Repeat("A", len(good)), nil},
		{"prefix of token", good[:10], nil},
		{"foreign Origin", good, func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }},
		{"Origin null alone", good, func(r *http.Request) { r.Header.Set("Origin", "null") }},
		{"cross-site fetch", good, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }},
		{"same-site fetch", good, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") }},
		{"foreign Referer", good, func(r *http.Request) {
			r.Header.Del("Origin")
			r.Header.Set("Referer", "https://evil.example/console/tokens")
		}},
	} {
		resp, body := cc.post("/console/tokens", url.Values{"csrf": {tc.csrf}, "tags": {"tag:x"}}, tc.mod)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "refused") {
			t.Errorf("%s: %d, want 403", tc.name, resp.StatusCode)
		}
	}
	if n := h.c.Stats().TokensCreated; n != 0 {
		t.Fatalf("refused POSTs created %d tokens", n)
	}
	if got := h.c.Stats().Refused[console.CodeCSRF]; got != 8 {
		t.Errorf("Refused[%s] = %d, want 8", console.CodeCSRF, got)
	}
	// What a browser sends for a same-origin form under no-referrer.
	browser := func(r *http.Request) {
		r.Header.Set("Origin", "null")
		r.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	noOrigin := func(r *http.Request) { r.Header.Del("Origin") }
	for i, mod := range []func(*http.Request){nil, browser, noOrigin} {
		resp, body := cc.post("/console/tokens", url.Values{"csrf": {good}}, mod)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="new-token"`) {
			t.Errorf("good POST %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if n := h.c.Stats().TokensCreated; n != 3 {
		t.Errorf("TokensCreated = %d, want 3", n)
	}
	// A CSRF token is bound to its session.
	other := newConsoleClient(t, h)
	other.login()
	if resp, _ := other.post("/console/tokens", url.Values{"csrf": {good}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another session's CSRF token: %d, want 403", resp.StatusCode)
	}
}

func TestConsoleTokensEnrollRevoke(t *testing.T) {
	h := newConsoleHarness(t, nil)
	cc := newConsoleClient(t, h)
	cc.login()

	tok, id := cc.createToken(url.Values{"tags": {"tag:web, tag:db"}, "ttl": {"2h"}, "reusable": {"1"}})
	a := newTestNode(t, h.c)
	if resp := a.enroll(tok, "alpha"); strings.Join(resp.Node.Tags, ",") != "tag:db,tag:web" {
		t.Errorf("node tags %v", resp.Node.Tags)
	}
	_, body := cc.get("/console/tokens")
	if strings.Contains(body, tok) || strings.Contains(body, "new-token") {
		t.Error("the token list shows a token secret again")
	}
	row := regexp.MustCompile(`(?s)<tr data-id="` + id + `">.*?</tr>`).FindString(body)
	for _, want := range []string{"tag:db, tag:web", "<td>yes</td>", "1 time<", `class="status">active<`, "Revoke"} {
		if !strings.Contains(row, want) {
			t.Errorf("token row lacks %q:\n%s", want, row)
		}
	}

	resp, _ := cc.post("/console/tokens/revoke", url.Values{"csrf": {cc.csrf}, "id": {id}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/tokens?revoked="+id {
		t.Fatalf("revoke: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, status, er := newTestNode(t, h.c).tryEnroll(tok, "bravo")
	if status != http.StatusUnauthorized || er.Code != wire.CodeTokenRevoked || !strings.Contains(er.Error, "revoked") {
		t.Errorf("enroll with a revoked token: %d %s %q", status, er.Code, er.Error)
	}
	if h.nodeCount() != 1 {
		t.Error("a revoked token enrolled a node")
	}
	a.enroll("", "alpha") // re-enrollment of a known identity needs no token
	_, body = cc.get("/console/tokens?revoked=" + id)
	row = regexp.MustCompile(`(?s)<tr data-id="` + id + `">.*?</tr>`).FindString(body)
	if !strings.Contains(row, `class="status">revoked<`) || strings.Contains(row, "Revoke") || !strings.Contains(body, "is revoked") {
		t.Errorf("revoked token row:\n%s", row)
	}

	if _, body := cc.get("/console/tokens?revoked=made-up"); strings.Contains(body, "made-up") {
		t.Error("the revoked notice trusts the URL")
	}
	if resp, body := cc.post("/console/tokens/revoke", url.Values{"csrf": {cc.csrf}, "id": {"0123456789abcdef"}}, nil); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no join token") {
		t.Errorf("revoke unknown: %d", resp.StatusCode)
	}
	for _, tc := range []struct{ tags, ttl, want string }{
		{"web", "", "is not \"tag:\""},
		{"", "soon", "is not a duration"},
		{"", "-5m", "is not a duration"},
	} {
		resp, body := cc.post("/console/tokens", url.Values{"csrf": {cc.csrf}, "tags": {tc.tags}, "ttl": {tc.ttl}}, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(html.UnescapeString(body), tc.want) || strings.Contains(body, `id="new-token"`) {
			t.Errorf("tags %q ttl %q: %d, want 400 with %q", tc.tags, tc.ttl, resp.StatusCode, tc.want)
		}
	}

	// One-use tokens show as used after one enrollment.
	tok1, id1 := cc.createToken(url.Values{"ttl": {"1d"}})
	newTestNode(t, h.c).enroll(tok1, "charlie")
	_, body = cc.get("/console/tokens")
	row = regexp.MustCompile(`(?s)<tr data-id="` + id1 + `">.*?</tr>`).FindString(body)
	if !strings.Contains(row, `class="status">used<`) || !strings.Contains(row, "<td>no</td>") {
		t.Errorf("one-use token row:\n%s", row)
	}
}

func TestConsoleAgentsAndPlaceholders(t *testing.T) {
	h := newConsoleHarness(t, nil)
	cc := newConsoleClient(t, h)
	cc.login()
	if _, body := cc.get("/console/agents"); !strings.Contains(body, `id="agents-empty"`) {
		t.Error("empty agents page lacks its hint")
	}
	tok := h.token(wire.CreateTokenRequest{Reusable: true, Tags: []string{"tag:tools"}})
	a := newTestNode(t, h.c)
	alpha := a.enroll(tok, "alpha").Node
	a.openStream(h.c.PublicKey()).waitMap(5*time.Second, "alpha", func(*wire.Map) bool { return true })
	newTestNode(t, h.c).enroll(tok, "bravo")

	resp, body := cc.get("/console/agents")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("agents: %d", resp.StatusCode)
	}
	row := regexp.MustCompile(`(?s)<tr data-name="alpha">.*?</tr>`).FindString(body)
	for _, want := range []string{alpha.IPv4.String(), alpha.IPv6.String(), alpha.DID, "tag:tools", ">online<", ">now<",
		"<td>" + strconv.Itoa(wire.ProtocolVersion) + "</td>"} {
		if !strings.Contains(row, want) {
			t.Errorf("alpha row lacks %q:\n%s", want, row)
		}
	}
	row = regexp.MustCompile(`(?s)<tr data-name="bravo">.*?</tr>`).FindString(body)
	if !strings.Contains(row, ">offline<") || !strings.Contains(row, "<time datetime=") {
		t.Errorf("bravo row:\n%s", row)
	}
	for _, want := range []string{`<th scope="col">Name</th>`, "<caption>2 enrolled agents"} {
		if !strings.Contains(body, want) {
			t.Errorf("agents page lacks %q", want)
		}
	}

	_, body = cc.get("/console/map")
	if n := strings.Count(body, `<circle class="node`); n != 2+2 { // two agents, two legend entries
		t.Errorf("map page has %d node circles, want 4", n)
	}
	if !strings.Contains(body, `src="/console/static/map.js"`) {
		t.Error("map page does not load map.js")
	}

	for _, path := range []string{"/console/policy", "/console/audit"} {
		resp, body := cc.get(path)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "arrives with the policy issue") {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	if resp, _ := cc.get("/console/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown console page: %d", resp.StatusCode)
	}
}

// eventStream reads a console SSE stream in a goroutine owned by close.
type eventStream struct {
	t     *testing.T
	body  io.ReadCloser
	snaps chan console.Graph
	done  chan struct{}
	once  sync.Once
}

func (cc *consoleClient) openEvents() *eventStream {
	cc.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, cc.base+"/console/events", nil)
	resp, err := cc.hc.Do(req)
	if err != nil {
		cc.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		cc.t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	es := &eventStream{t: cc.t, body: resp.Body, snaps: make(chan console.Graph, 64), done: make(chan struct{})}
	go func() {
		defer close(es.done)
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "snapshot":
				var g console.Graph
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &g); err != nil {
					return
				}
				es.snaps <- g
			}
		}
	}()
	cc.t.Cleanup(es.close)
	return es
}

func (es *eventStream) close() {
	es.once.Do(func() { es.body.Close() })
	<-es.done
}

func (es *eventStream) wait(what string, ok func(console.Graph) bool) console.Graph {
	es.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case g := <-es.snaps:
			if ok(g) {
				return g
			}
		case <-es.done:
			es.t.Fatalf("event stream ended while waiting for %s", what)
		case <-timeout:
			es.t.Fatalf("no snapshot with %s within 5s", what)
		}
	}
}

func (es *eventStream) waitEnd(d time.Duration) {
	es.t.Helper()
	select {
	case <-es.done:
	case <-time.After(d):
		es.t.Fatalf("event stream still open after %v", d)
	}
}

func online(g console.Graph) (names []string) {
	for _, n := range g.Nodes {
		if n.Online {
			names = append(names, n.Name)
		}
	}
	return names
}

func TestConsoleEvents(t *testing.T) {
	h := newConsoleHarness(t, nil)
	cc := newConsoleClient(t, h)
	cc.login()
	es := cc.openEvents()
	es.wait("the first snapshot", func(g console.Graph) bool { return len(g.Nodes) == 0 && len(g.Paths) == 0 })

	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a := newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	es.wait("alpha enrolled", func(g console.Graph) bool { return len(g.Nodes) == 1 && !g.Nodes[0].Online })
	a.openStream(h.c.PublicKey())
	es.wait("alpha online", func(g console.Graph) bool { return strings.Join(online(g), ",") == "alpha" && len(g.Paths) == 0 })

	b := newTestNode(t, h.c)
	b.enroll(tok, "bravo")
	bs := b.openStream(h.c.PublicKey())
	g := es.wait("a path alpha–bravo", func(g console.Graph) bool { return len(g.Paths) == 1 })
	if p := g.Paths[0]; p != (console.GraphPath{A: "alpha", B: "bravo", Kind: "direct"}) {
		t.Errorf("path %+v", p)
	}
	if g.Nodes[1].IPv4 != b.self.IPv4 {
		t.Errorf("bravo ipv4 %v, want %v", g.Nodes[1].IPv4, b.self.IPv4)
	}
	bs.close()
	es.wait("bravo offline", func(g console.Graph) bool { return strings.Join(online(g), ",") == "alpha" && len(g.Paths) == 0 })

	// Logging out ends the session's streams.
	cc.post("/console/logout", url.Values{"csrf": {cc.csrf}}, nil)
	es.waitEnd(2 * time.Second)
}

func TestConsoleCloseEndsEvents(t *testing.T) {
	h := newConsoleHarness(t, nil)
	cc := newConsoleClient(t, h)
	cc.login()
	es := cc.openEvents()
	es.wait("the first snapshot", func(console.Graph) bool { return true })
	start := time.Now()
	if err := h.c.Close(); err != nil {
		t.Fatal(err)
	}
	es.waitEnd(time.Second)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close with an open event stream took %v", d)
	}
	if strings.Contains(h.logs.String(), "requests still running at close") {
		t.Error("the event stream outlived Close's drain")
	}
}
