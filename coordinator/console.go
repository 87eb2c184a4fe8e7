package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
)

// The web console (Config.Console) is served on the API's HTTPS listener
// under consolePrefix. It is server-rendered html/template pages with one
// stylesheet and one script (the live network map), all embedded, so the
// console works offline and its Content-Security-Policy can forbid
// everything but 'self'.
//
// Authentication is the admin secret of admin.cred, exchanged once at login
// for a random session id in a cookie. Every state-changing request is a
// POST that carries the session's CSRF token in a form field and passes an
// origin check (consoleSameOrigin); GET never changes state.

//go:embed console/templates/*.html console/static/*
var consoleFS embed.FS

const (
	consolePrefix   = "/console/"
	consoleCookie   = "__Secure-agentnet-console" // __Secure-: browsers refuse it without Secure
	sessionTTL      = 12 * time.Hour
	maxSessions     = 1024     // a full table evicts the session nearest to expiry
	consoleMaxForm  = 16 << 10 // bytes of a console form body
	consoleCodeAuth = "console_login"
	consoleCodeCSRF = "console_csrf"
)

// setConsoleHeaders sets the headers of every console response. The CSP
// allows only same-origin resources and no inline script or style; frames
// and <base> are refused.
func setConsoleHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// console is the state of the web console. It lives as long as its
// Coordinator and owns no goroutines: event streams run in request
// handlers, which end when the Coordinator closes.
type console struct {
	c      *Coordinator
	pages  map[string]*template.Template // by page file name
	static http.Handler

	mu       sync.Mutex            // guards the fields below
	sessions map[[32]byte]*session // by SHA-256 of the cookie value
	versions map[string]int        // DID → control protocol version last seen on an accepted request
}

// session is one logged-in browser. csrf is fixed for the session's life.
type session struct {
	key     [32]byte // SHA-256 of the cookie value
	csrf    string
	expires time.Time
}

// withSession returns r's context carrying s; sessionOf reads it back.
func withSession(r *http.Request, s *session) context.Context {
	return context.WithValue(r.Context(), ctxSession{}, s)
}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(ctxSession{}).(*session)
	return s
}

func newConsole(c *Coordinator) (*console, error) {
	con := &console{
		c:        c,
		pages:    make(map[string]*template.Template),
		sessions: make(map[[32]byte]*session),
		versions: make(map[string]int),
	}
	funcs := template.FuncMap{"timefmt": consoleTime}
	names, err := fs.Glob(consoleFS, "console/templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		base := name[len("console/templates/"):]
		if base == "layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(consoleFS, "console/templates/layout.html", name)
		if err != nil {
			return nil, fmt.Errorf("coordinator: console template %s: %w", base, err)
		}
		con.pages[base] = t
	}
	static, err := fs.Sub(consoleFS, "console/static")
	if err != nil {
		return nil, err
	}
	con.static = http.StripPrefix(consolePrefix+"static/", http.FileServerFS(static))
	return con, nil
}

// handler returns api with the console mounted beside it: consolePrefix
// serves the console, "GET /" redirects to it, and everything else goes to
// api (whose accepted node requests are watched for their protocol
// version, shown on the agents page).
func (con *console) handler(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", con.watchVersions(api))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, consolePrefix, http.StatusFound)
	})
	mux.Handle("GET /console/static/", con.wrap(false, con.static.ServeHTTP))
	mux.Handle("GET /console/login", con.wrap(false, con.handleLoginPage))
	mux.Handle("POST /console/login", con.wrap(false, con.limitedLogin(con.handleLogin)))
	mux.Handle("POST /console/logout", con.wrap(true, con.handleLogout))
	mux.Handle("GET /console/{$}", con.wrap(true, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, consolePrefix+"agents", http.StatusSeeOther)
	}))
	mux.Handle("GET /console/agents", con.wrap(true, con.handleAgents))
	mux.Handle("GET /console/map", con.wrap(true, con.handleMap))
	mux.Handle("GET /console/events", con.wrap(true, con.handleEvents))
	mux.Handle("GET /console/tokens", con.wrap(true, con.handleTokens))
	mux.Handle("POST /console/tokens", con.wrap(true, con.handleCreateToken))
	mux.Handle("POST /console/tokens/revoke", con.wrap(true, con.handleRevokeToken))
	mux.Handle("GET /console/policy", con.wrap(true, con.handleNotYet("Policy")))
	mux.Handle("GET /console/audit", con.wrap(true, con.handleNotYet("Audit log")))
	mux.Handle("/console/", con.wrap(false, func(w http.ResponseWriter, r *http.Request) {
		con.render(w, r, http.StatusNotFound, "error.html", pageData{Title: "Not found", Error: "There is no console page " + r.URL.Path + "."})
	}))
	return mux
}

// ctxSession is the request-context key of the logged-in session.
type ctxSession struct{}

// wrap is the middleware of every console request: Close tracking, the
// security headers, a bounded body, and, when auth is set, a valid session
// (a GET without one is sent to the login page) plus, for a POST, the
// origin and CSRF checks.
func (con *console) wrap(auth bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := con.c
		if !c.enter() {
			http.Error(w, "coordinator is shutting down", http.StatusServiceUnavailable)
			return
		}
		defer c.leave()
		c.stats.requests.Add(1)
		setConsoleHeaders(w.Header())
		r.Body = http.MaxBytesReader(w, r.Body, consoleMaxForm)
		if r.Method == http.MethodPost && !consoleSameOrigin(r) {
			con.deny(w, r, consoleCodeCSRF, "cross-origin request")
			return
		}
		if !auth {
			h(w, r)
			return
		}
		s := con.session(r)
		if s == nil {
			if r.Method == http.MethodGet && r.URL.Path != consolePrefix+"events" {
				http.Redirect(w, r, consolePrefix+"login", http.StatusSeeOther)
				return
			}
			w.Header().Set("Cache-Control", "no-store")
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			got := r.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
				con.deny(w, r, consoleCodeCSRF, "missing or wrong CSRF token")
				return
			}
		}
		h(w, r.WithContext(withSession(r, s)))
	})
}

// consoleSameOrigin reports whether a POST comes from a console page. A
// browser states that in Sec-Fetch-Site and Origin; since the console
// sends Referrer-Policy: no-referrer, a browser's form POST carries
// "Origin: null" (Fetch §3.2.5), which is accepted only together with
// "Sec-Fetch-Site: same-origin". Non-browser clients that send none of
// these headers pass here and still need the CSRF token.
func consoleSameOrigin(r *http.Request) bool {
	self := "https://" + r.Host
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		if o == "null" {
			return r.Header.Get("Sec-Fetch-Site") == "same-origin"
		}
		return o == self
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		u, err := url.Parse(ref)
		return err == nil && u.Scheme+"://"+u.Host == self
	}
	return true
}

// deny answers 403, counts the refusal under code and logs it once per
// (client, code) per interval.
func (con *console) deny(w http.ResponseWriter, r *http.Request, code, reason string) {
	con.refused(r, code, reason)
	con.render(w, r, http.StatusForbidden, "error.html", pageData{Title: "Forbidden",
		Error: "This request was refused (" + reason + "). Reload the page and try again."})
}

func (con *console) refused(r *http.Request, code, reason string) {
	c := con.c
	c.stats.refuse(code)
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	c.audit.RecordLimited(audit.KindRequestRefused, host, code, "path", r.URL.Path, "reason", reason)
	if c.limiter.Allow(host+"||"+code, c.now()) {
		c.log.Warn("coordinator: console request refused", "reason", reason, "path", r.URL.Path, "endpoint", r.RemoteAddr)
	} else {
		c.stats.logsSuppressed.Add(1)
	}
}

// handleLoginPage shows the login form (or goes on to the console when the
// browser is already logged in).
func (con *console) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	if con.session(r) != nil {
		http.Redirect(w, r, consolePrefix+"agents", http.StatusSeeOther)
		return
	}
	con.render(w, r, http.StatusOK, "login.html", pageData{Title: "Log in"})
}

// handleLogin checks the admin secret (SHA-256 digests compared in
// constant time, as the admin API does) and starts a session.
func (con *console) handleLogin(w http.ResponseWriter, r *http.Request) {
	c := con.c
	sum := sha256.Sum256([]byte(r.PostFormValue("secret")))
	if subtle.ConstantTimeCompare(sum[:], c.adminSum[:]) != 1 {
		con.refused(r, consoleCodeAuth, "wrong admin secret")
		c.audit.RecordLimited(audit.KindAdminLogin, remoteHost(r), consoleCodeAuth, "result", "failure", "via", "console")
		con.render(w, r, http.StatusUnauthorized, "login.html", pageData{Title: "Log in",
			Error: "That is not the admin secret. It is the \"secret\" field of admin.cred in the coordinator's data directory."})
		return
	}
	id := con.newSession()
	http.SetCookie(w, &http.Cookie{
		Name: consoleCookie, Value: id, Path: "/console",
		MaxAge: int(sessionTTL / time.Second), HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	c.log.Info("coordinator: console login", "endpoint", r.RemoteAddr)
	c.audit.Record(audit.KindAdminLogin, "actor", "admin", "remote", r.RemoteAddr, "result", "success", "via", "console")
	http.Redirect(w, r, consolePrefix+"agents", http.StatusSeeOther)
}

// handleLogout ends the session and clears the cookie.
func (con *console) handleLogout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(consoleCookie); err == nil {
		con.mu.Lock()
		delete(con.sessions, sha256.Sum256([]byte(ck.Value)))
		con.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{
		Name: consoleCookie, Value: "", Path: "/console",
		MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, consolePrefix+"login", http.StatusSeeOther)
}

// newSession makes a session with a random 32-byte id and CSRF token. Only
// the id's SHA-256 is kept, so the session table holds no usable cookie.
func (con *console) newSession() string {
	var id, csrf [32]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	_, _ = rand.Read(csrf[:])
	now := con.c.now()
	s := &session{csrf: base64.RawURLEncoding.EncodeToString(csrf[:]), expires: now.Add(sessionTTL)}
	con.mu.Lock()
	defer con.mu.Unlock()
	var oldest [32]byte
	var oldestExp time.Time
	for k, v := range con.sessions {
		if !now.Before(v.expires) {
			delete(con.sessions, k)
		} else if oldestExp.IsZero() || v.expires.Before(oldestExp) {
			oldest, oldestExp = k, v.expires
		}
	}
	if len(con.sessions) >= maxSessions {
		delete(con.sessions, oldest)
	}
	cookie := base64.RawURLEncoding.EncodeToString(id[:])
	s.key = sha256.Sum256([]byte(cookie))
	con.sessions[s.key] = s
	return cookie
}

// session returns the request's live session, or nil.
func (con *console) session(r *http.Request) *session {
	ck, err := r.Cookie(consoleCookie)
	if err != nil || ck.Value == "" {
		return nil
	}
	key := sha256.Sum256([]byte(ck.Value))
	con.mu.Lock()
	defer con.mu.Unlock()
	s := con.sessions[key]
	if s == nil {
		return nil
	}
	if !con.c.now().Before(s.expires) {
		delete(con.sessions, key)
		return nil
	}
	return s
}

// alive reports whether s is still a live session (not logged out or
// expired); event streams check it on every tick.
func (con *console) alive(s *session) bool {
	con.mu.Lock()
	defer con.mu.Unlock()
	return con.sessions[s.key] == s && con.c.now().Before(s.expires)
}
