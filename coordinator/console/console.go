// Package console is the coordinator's web console: server-rendered pages
// (agents, network map, join tokens) and a live map over Server-Sent
// Events, mounted beside the API on the coordinator's HTTPS listener. It
// reaches the control plane only through Core, which the coordinator
// implements.
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// The web console (coordinator Config.Console) is served on the API's
// HTTPS listener under consolePrefix. It is server-rendered html/template pages with one
// stylesheet and one script (the live network map), all embedded, so the
// console works offline and its Content-Security-Policy can forbid
// everything but 'self'.
//
// Authentication is the admin secret of admin.cred, exchanged once at login
// for a random session id in a cookie. Every state-changing request is a
// POST that carries the session's CSRF token in a form field and passes an
// origin check (consoleSameOrigin); GET never changes state.

//go:embed templates/*.html static/*
var consoleFS embed.FS

const (
	consolePrefix = "/console/"
	CookieName    = "__Secure-agentnet-console" // __Secure-: browsers refuse it without Secure
	SessionTTL    = 12 * time.Hour
	maxSessions   = 1024     // a full table evicts the session nearest to expiry
	MaxForm       = 16 << 10 // bytes of a console form body
)

// Refusal codes of the console, counted beside the API's wire.Code* ones.
const (
	CodeLogin = "console_login" // wrong admin secret at login
	CodeCSRF  = "console_csrf"  // a POST failed the origin or CSRF check
)

// Core is what the console needs of the control plane; the coordinator
// implements it. Every method is safe for concurrent use.
type Core interface {
	// Enter registers a console request with the coordinator's Close
	// tracking and counts it; false once Close has begun. Every true is
	// followed by one Leave.
	Enter() bool
	Leave()
	// Refused counts a refused console request under code, writes it to
	// the audit log (rate-limited per host and code) and logs it (also
	// rate-limited).
	Refused(r *http.Request, code, reason string)
	// AdminSecretOK reports whether secret is the admin secret, in
	// constant time.
	AdminSecretOK(secret string) bool
	// AllowLogin applies the per-source login limit to r; when it refuses,
	// retryAfter is the Retry-After value (whole seconds).
	AllowLogin(r *http.Request) (ok bool, retryAfter string)
	// Serial returns the map serial, which every change bumps (online and
	// offline flips included); cheap enough to poll.
	Serial() uint64
	// Nodes returns every node, sorted by name, with live Online.
	Nodes() []wire.Node
	// Tokens returns every join-token record, newest first.
	Tokens() ([]store.TokenRecord, error)
	// CreateToken and RevokeToken are the admin API's; a refusal is a
	// *wire.APIError.
	CreateToken(req wire.CreateTokenRequest) (wire.CreateTokenResponse, error)
	RevokeToken(id string) error
}

// Config configures a Console.
type Config struct {
	Core         Core             // required
	Audit        *audit.Log       // optional: logins are recorded here; nil records nothing
	Logger       *slog.Logger     // optional; default: discard
	Now          func() time.Time // optional; default time.Now
	WriteTimeout time.Duration    // required: bounds one write to an event stream
}

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

// Console is the state of the web console. It lives as long as its
// coordinator and owns no goroutines: event streams run in request
// handlers, which end when the coordinator closes.
type Console struct {
	core   Core
	cfg    Config
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

// New parses the embedded templates and returns the console; mount it with
// Handler.
func New(cfg Config) (*Console, error) {
	if cfg.Core == nil {
		return nil, errors.New("console: Config.Core is required")
	}
	if cfg.WriteTimeout <= 0 {
		return nil, fmt.Errorf("console: Config.WriteTimeout %v is not positive", cfg.WriteTimeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	con := &Console{
		core:     cfg.Core,
		cfg:      cfg,
		pages:    make(map[string]*template.Template),
		sessions: make(map[[32]byte]*session),
		versions: make(map[string]int),
	}
	funcs := template.FuncMap{"timefmt": consoleTime}
	names, err := fs.Glob(consoleFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		base := name[len("templates/"):]
		if base == "layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(consoleFS, "templates/layout.html", name)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", base, err)
		}
		con.pages[base] = t
	}
	static, err := fs.Sub(consoleFS, "static")
	if err != nil {
		return nil, err
	}
	con.static = http.StripPrefix(consolePrefix+"static/", http.FileServerFS(static))
	return con, nil
}

// Handler returns api with the console mounted beside it: consolePrefix
// serves the console, "GET /" redirects to it, and everything else goes to
// api (whose accepted node requests are watched for their protocol
// version, shown on the agents page).
func (con *Console) Handler(api http.Handler) http.Handler {
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
func (con *Console) wrap(auth bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !con.core.Enter() {
			http.Error(w, "coordinator is shutting down", http.StatusServiceUnavailable)
			return
		}
		defer con.core.Leave()
		setConsoleHeaders(w.Header())
		r.Body = http.MaxBytesReader(w, r.Body, MaxForm)
		if r.Method == http.MethodPost && !consoleSameOrigin(r) {
			con.deny(w, r, CodeCSRF, "cross-origin request")
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
				con.deny(w, r, CodeCSRF, "missing or wrong CSRF token")
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
func (con *Console) deny(w http.ResponseWriter, r *http.Request, code, reason string) {
	con.refused(r, code, reason)
	con.render(w, r, http.StatusForbidden, "error.html", pageData{Title: "Forbidden",
		Error: "This request was refused (" + reason + "). Reload the page and try again."})
}

func (con *Console) refused(r *http.Request, code, reason string) {
	con.core.Refused(r, code, reason)
}

// handleLoginPage shows the login form (or goes on to the console when the
// browser is already logged in).
func (con *Console) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	if con.session(r) != nil {
		http.Redirect(w, r, consolePrefix+"agents", http.StatusSeeOther)
		return
	}
	con.render(w, r, http.StatusOK, "login.html", pageData{Title: "Log in"})
}

// handleLogin checks the admin secret (SHA-256 digests compared in
// constant time, as the admin API does) and starts a session.
func (con *Console) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !con.core.AdminSecretOK(r.PostFormValue("secret")) {
		con.refused(r, CodeLogin, "wrong admin secret")
		con.cfg.Audit.RecordLimited(audit.KindAdminLogin, remoteHost(r), CodeLogin, "result", "failure", "via", "console")
		con.render(w, r, http.StatusUnauthorized, "login.html", pageData{Title: "Log in",
			Error: "That is not the admin secret. It is the \"secret\" field of admin.cred in the coordinator's data directory."})
		return
	}
	id := con.newSession()
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: id, Path: "/console",
		MaxAge: int(SessionTTL / time.Second), HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	con.cfg.Logger.Info("coordinator: console login", "endpoint", r.RemoteAddr)
	con.cfg.Audit.Record(audit.KindAdminLogin, "actor", "admin", "remote", r.RemoteAddr, "result", "success", "via", "console")
	http.Redirect(w, r, consolePrefix+"agents", http.StatusSeeOther)
}

// handleLogout ends the session and clears the cookie.
func (con *Console) handleLogout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		con.mu.Lock()
		delete(con.sessions, sha256.Sum256([]byte(ck.Value)))
		con.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/console",
		MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, consolePrefix+"login", http.StatusSeeOther)
}

// newSession makes a session with a random 32-byte id and CSRF token. Only
// the id's SHA-256 is kept, so the session table holds no usable cookie.
func (con *Console) newSession() string {
	var id, csrf [32]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	_, _ = rand.Read(csrf[:])
	now := con.cfg.Now()
	s := &session{csrf: base64.RawURLEncoding.EncodeToString(csrf[:]), expires: now.Add(SessionTTL)}
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
func (con *Console) session(r *http.Request) *session {
	ck, err := r.Cookie(CookieName)
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
	if !con.cfg.Now().Before(s.expires) {
		delete(con.sessions, key)
		return nil
	}
	return s
}

// alive reports whether s is still a live session (not logged out or
// expired); event streams check it on every tick.
func (con *Console) alive(s *session) bool {
	con.mu.Lock()
	defer con.mu.Unlock()
	return con.sessions[s.key] == s && con.cfg.Now().Before(s.expires)
}

// remoteHost is the client's IP without port.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limitedLogin wraps the console login with the coordinator's Login limit
// (Core.AllowLogin): over it, the login page is shown again with 429 and
// Retry-After, and the refusal is counted under wire.CodeRateLimited. The
// secret is not checked.
func (con *Console) limitedLogin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ok, retryAfter := con.core.AllowLogin(r)
		if ok {
			h(w, r)
			return
		}
		w.Header().Set("Retry-After", retryAfter)
		con.refused(r, wire.CodeRateLimited, "too many login attempts")
		con.render(w, r, http.StatusTooManyRequests, "login.html", pageData{Title: "Log in",
			Error: "Too many login attempts from your address. Wait " + retryAfter + " s and try again."})
	}
}
