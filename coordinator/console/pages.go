package console

import (
	"bytes"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// pageData is what every console template gets. Page-specific fields are
// left zero by the other pages.
type pageData struct {
	Title  string
	Nav    string // the nav entry marked aria-current
	CSRF   string // the session's CSRF token, for every POST form
	Authed bool
	Error  string
	Notice string

	Agents   []agentRow
	Tokens   []tokenRow
	NewToken *wire.CreateTokenResponse
	Form     tokenForm
	Graph    graphView
	Feature  string
	Protocol int

	revoked string // token id from the URL after a revocation
}

type agentRow struct {
	wire.Node
	Version string // control protocol version last seen, or "-"
}

type tokenRow struct {
	store.TokenRecord
	Status string // active, used, expired or revoked
}

// tokenForm echoes the create-token form after a refusal.
type tokenForm struct {
	Tags, TTL string
	Reusable  bool
}

// render executes page into a buffer first, so a template error becomes a
// clean 500 instead of half a page.
func (con *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, d pageData) {
	if s := sessionOf(r); s != nil {
		d.CSRF, d.Authed = s.csrf, true
	}
	d.Protocol = wire.ProtocolVersion
	var buf bytes.Buffer
	t := con.pages[page]
	if t == nil {
		con.cfg.Logger.Error("coordinator: console has no page", "path", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.Execute(&buf, d); err != nil {
		con.cfg.Logger.Error("coordinator: console render", "path", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// consoleTime formats a time for people (UTC, to the second); zero is "never".
func consoleTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func (con *Console) handleAgents(w http.ResponseWriter, r *http.Request) {
	nodes := con.core.Nodes()
	rows := make([]agentRow, len(nodes))
	con.mu.Lock()
	for i, n := range nodes {
		rows[i] = agentRow{Node: n, Version: "-"}
		if v, ok := con.versions[n.DID]; ok {
			rows[i].Version = strconv.Itoa(v)
		}
	}
	con.mu.Unlock()
	con.render(w, r, http.StatusOK, "agents.html", pageData{Title: "Agents", Nav: "agents", Agents: rows})
}

func (con *Console) handleMap(w http.ResponseWriter, r *http.Request) {
	g := newGraph(con.core.Nodes())
	con.render(w, r, http.StatusOK, "map.html", pageData{Title: "Network map", Nav: "map", Graph: g.view()})
}

func (con *Console) handleTokens(w http.ResponseWriter, r *http.Request) {
	con.tokensPage(w, r, http.StatusOK, pageData{revoked: r.URL.Query().Get("revoked")})
}

// tokensPage renders the tokens page around d with the current token list.
func (con *Console) tokensPage(w http.ResponseWriter, r *http.Request, status int, d pageData) {
	d.Title, d.Nav = "Join tokens", "tokens"
	recs, err := con.core.Tokens()
	if err != nil {
		con.cfg.Logger.Error("coordinator: console list tokens", "err", err)
		d.Error, status = "The token list could not be read.", http.StatusInternalServerError
	}
	now := con.cfg.Now()
	for _, rec := range recs {
		st := "active"
		switch {
		case rec.Revoked:
			st = "revoked"
		case !now.Before(rec.Expires):
			st = "expired"
		case rec.Used && !rec.Reusable:
			st = "used"
		}
		d.Tokens = append(d.Tokens, tokenRow{TokenRecord: rec, Status: st})
		if d.revoked != "" && rec.ID == d.revoked && rec.Revoked {
			d.Notice = "Token " + rec.ID + " is revoked." // only for a real one: the URL is not trusted
		}
	}
	con.render(w, r, status, "tokens.html", d)
}

// handleCreateToken creates a token from the form and shows it once, in
// this response only (never stored, never in a URL).
func (con *Console) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	f := tokenForm{Tags: r.PostFormValue("tags"), TTL: strings.TrimSpace(r.PostFormValue("ttl")), Reusable: r.PostFormValue("reusable") != ""}
	req := wire.CreateTokenRequest{Reusable: f.Reusable}
	for _, t := range strings.FieldsFunc(f.Tags, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		req.Tags = append(req.Tags, t)
	}
	if f.TTL != "" {
		ttl, err := parseTTL(f.TTL)
		if err != nil || ttl <= 0 {
			con.tokensPage(w, r, http.StatusBadRequest, pageData{Form: f, Error: "Lifetime " + strconv.Quote(f.TTL) + " is not a duration such as 30m, 12h or 7d."})
			return
		}
		req.TTLSeconds = max(int64(ttl/time.Second), 1)
	}
	resp, err := con.core.CreateToken(req)
	if err != nil {
		var ae *wire.APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			con.tokensPage(w, r, ae.Status, pageData{Form: f, Error: ae.Message + "."})
			return
		}
		con.cfg.Logger.Error("coordinator: console create token", "err", err)
		con.tokensPage(w, r, http.StatusInternalServerError, pageData{Form: f, Error: "The token could not be created."})
		return
	}
	con.tokensPage(w, r, http.StatusOK, pageData{NewToken: &resp})
}

// parseTTL is time.ParseDuration plus whole days ("7d").
func parseTTL(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(d, 10, 16)
		return time.Duration(n) * 24 * time.Hour, err
	}
	return time.ParseDuration(s)
}

func (con *Console) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	id := r.PostFormValue("id")
	if err := con.core.RevokeToken(id); err != nil {
		var ae *wire.APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			con.tokensPage(w, r, ae.Status, pageData{Error: ae.Message + "."})
			return
		}
		con.cfg.Logger.Error("coordinator: console revoke token", "token", id, "err", err)
		con.tokensPage(w, r, http.StatusInternalServerError, pageData{Error: "The token could not be revoked."})
		return
	}
	http.Redirect(w, r, consolePrefix+"tokens?revoked="+url.QueryEscape(id), http.StatusSeeOther)
}

// handleNotYet renders an honest placeholder for a feature that does not
// exist yet, rather than made-up data.
func (con *Console) handleNotYet(feature string) http.HandlerFunc {
	nav := strings.ToLower(strings.Fields(feature)[0])
	return func(w http.ResponseWriter, r *http.Request) {
		con.render(w, r, http.StatusOK, "notyet.html", pageData{Title: feature, Nav: nav, Feature: feature})
	}
}

// watchVersions records, for each accepted node request (2xx on enroll,
// update or the stream), the control protocol version it was made with.
// Only a 2xx proves the Agentnet-Node header was verified.
func (con *Console) watchVersions(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case wire.PathEnroll, wire.PathUpdate, wire.PathStream:
		default:
			api.ServeHTTP(w, r)
			return
		}
		did := r.Header.Get(wire.HeaderNode)
		v, err := strconv.Atoi(r.Header.Get(wire.HeaderProtocol))
		if did == "" || err != nil {
			api.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(&versionWriter{ResponseWriter: w, seen: func() {
			con.mu.Lock()
			con.versions[did] = v
			con.mu.Unlock()
		}}, r)
	})
}

// versionWriter calls seen once when a 2xx status is written. Unwrap lets
// http.ResponseController reach the real writer (Flush, deadlines).
type versionWriter struct {
	http.ResponseWriter
	seen  func()
	wrote bool
}

func (w *versionWriter) WriteHeader(status int) {
	if !w.wrote {
		w.wrote = true
		if status/100 == 2 {
			w.seen()
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *versionWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *versionWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Graph is the network picture: nodes and the live paths between them.
// It is the JSON of the "snapshot" event that static/map.js draws.
type Graph struct {
	Nodes   []GraphNode `json:"nodes"`
	Paths   []GraphPath `json:"paths"`
	TooMany bool        `json:"too_many,omitempty"` // paths left out: too many online nodes to draw
}

type GraphNode struct {
	Name   string     `json:"name"`
	IPv4   netip.Addr `json:"ipv4"`
	Online bool       `json:"online"`
}

// GraphPath is a path between online nodes A and B. Kind is "direct" or
// "relayed". Nodes report their paths only locally for now, so the
// coordinator draws every pair of online nodes as direct.
type GraphPath struct {
	A    string `json:"a"`
	B    string `json:"b"`
	Kind string `json:"kind"`
}

// maxGraphOnline bounds the pairs drawn (n² lines are unreadable anyway).
const maxGraphOnline = 64

func newGraph(nodes []wire.Node) Graph {
	g := Graph{Nodes: make([]GraphNode, 0, len(nodes)), Paths: []GraphPath{}}
	var online []string
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, GraphNode{Name: n.Name, IPv4: n.IPv4, Online: n.Online})
		if n.Online {
			online = append(online, n.Name)
		}
	}
	if len(online) > maxGraphOnline {
		g.TooMany = true
		return g
	}
	for i, a := range online {
		for _, b := range online[i+1:] {
			g.Paths = append(g.Paths, GraphPath{A: a, B: b, Kind: "direct"})
		}
	}
	return g
}
