package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"
)

// HTTPProxyConfig configures NewHTTPProxy.
type HTTPProxyConfig struct {
	// Listen is the TCP address to serve on, e.g. "127.0.0.1:8118".
	// Required.
	Listen string
	// Overlay is the node. Required.
	Overlay Overlay
	// AllowOutside lets clients reach destinations outside the overlay
	// through the host network. Optional; default false: such requests
	// get 403 Forbidden.
	AllowOutside bool
	// DialTimeout bounds resolving and dialing one destination.
	// Optional; default DefaultDialTimeout (30 s).
	DialTimeout time.Duration
	// MaxConnsPerSource caps the client connections from one source
	// address open at once; Accept resets (RST) and counts (ConnStats)
	// the ones beyond it. On a loopback listener every local program is
	// the same source. Optional; default DefaultMaxConnsPerSource (256);
	// negative is refused.
	MaxConnsPerSource int
	// MaxConns caps all client connections open at once, like
	// MaxConnsPerSource. Optional; default DefaultMaxConns (4096);
	// negative is refused.
	MaxConns int
	// Logger receives logs. Optional; default discards.
	Logger *slog.Logger
}

// HTTPProxy is an HTTP/1.1 forward proxy: CONNECT tunnels and
// absolute-URI requests ("GET http://search.agents.internal:8080/x"),
// both to overlay destinations by name or virtual IP. Origin-form requests
// ("GET /x") get 400.
type HTTPProxy struct {
	cfg    HTTPProxyConfig
	log    *slog.Logger
	ln     *limitListener
	srv    *http.Server
	rp     *httputil.ReverseProxy
	tr     *http.Transport
	r      router
	ctx    context.Context
	cancel context.CancelFunc
	t      tracker
	once   sync.Once
}

// NewHTTPProxy listens on cfg.Listen and starts serving.
func NewHTTPProxy(cfg HTTPProxyConfig) (*HTTPProxy, error) {
	if cfg.Overlay == nil {
		return nil, errors.New("proxy: http: Overlay is required")
	}
	if cfg.Listen == "" {
		return nil, errors.New("proxy: http: Listen is required")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	log := orDiscard(cfg.Logger).With("proxy", "http")
	lim, err := newLimiter(cfg.MaxConnsPerSource, cfg.MaxConns, log)
	if err != nil {
		return nil, fmt.Errorf("proxy: http: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxy: http: listen on %s: %w", cfg.Listen, err)
	}
	h := &HTTPProxy{
		cfg: cfg,
		log: log,
		ln:  &limitListener{Listener: ln, lim: lim},
		r:   router{ov: cfg.Overlay, allowOutside: cfg.AllowOutside},
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.tr = &http.Transport{
		Proxy:                 nil, // never chain to the host's proxy
		DialContext:           h.dialUpstream,
		MaxIdleConnsPerHost:   upstreamIdleConns,
		IdleConnTimeout:       upstreamIdleTimeout,
		ResponseHeaderTimeout: 0,
	}
	errLog := slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)
	h.rp = &httputil.ReverseProxy{
		// The request URI is already absolute; hop-by-hop headers are
		// removed by ReverseProxy itself.
		Rewrite:      func(*httputil.ProxyRequest) {},
		Transport:    h.tr,
		ErrorHandler: h.upstreamError,
		ErrorLog:     errLog,
	}
	h.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: DefaultHandshakeTimeout,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return h.ctx },
	}
	h.t.start(func() { h.srv.Serve(h.ln) })
	return h, nil
}

// Addr returns the address the proxy listens on.
func (h *HTTPProxy) Addr() net.Addr { return h.ln.Addr() }

// ConnStats returns the counters of client connections.
func (h *HTTPProxy) ConnStats() ConnStats { return connStats(h.ln.lim) }

// Close stops the listener, closes client connections, tunnels and
// upstream connections, and waits for all handlers.
func (h *HTTPProxy) Close() error {
	h.once.Do(func() {
		h.cancel()
		h.srv.Close() // listener and non-hijacked client connections
	})
	h.t.close() // tunnels and upstream connections; waits for handlers
	h.tr.CloseIdleConnections()
	return nil
}

// ServeHTTP implements http.Handler.
func (h *HTTPProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.t.enter() {
		http.Error(w, "agentnet proxy: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer h.t.leave()
	if r.Method == http.MethodConnect {
		h.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Host == "" || (r.URL.Scheme != "http" && r.URL.Scheme != "https") {
		http.Error(w, "agentnet proxy: expected CONNECT or an absolute http:// URI (this is a proxy, not a web server)", http.StatusBadRequest)
		return
	}
	port := uint16(80)
	if r.URL.Scheme == "https" {
		port = 443
	}
	if p := r.URL.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			http.Error(w, fmt.Sprintf("agentnet proxy: bad port %q", p), http.StatusBadRequest)
			return
		}
		port = uint16(n)
	}
	// Check the destination up front so refusals get a clear status; the
	// transport's dial routes again (cheap: a map lookup in the node).
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.DialTimeout)
	_, err := h.r.route(ctx, r.URL.Hostname(), port)
	cancel()
	if err != nil {
		h.refuse(w, r, r.URL.Host, err)
		return
	}
	h.rp.ServeHTTP(w, r)
}

// refuse answers a routing error: 403 for outside destinations, 502 for
// unknown names.
func (h *HTTPProxy) refuse(w http.ResponseWriter, r *http.Request, dest string, err error) {
	if errors.Is(err, ErrOutside) {
		h.log.Info("destination refused", "client", r.RemoteAddr, "endpoint", dest, "reason", "outside overlay")
		http.Error(w, fmt.Sprintf("agentnet proxy: %s is outside the overlay and this proxy only reaches overlay destinations", dest), http.StatusForbidden)
		return
	}
	h.log.Info("unknown destination", "client", r.RemoteAddr, "endpoint", dest, "err", err)
	http.Error(w, fmt.Sprintf("agentnet proxy: cannot reach %s: %v", dest, err), http.StatusBadGateway)
}

// upstreamError is the ReverseProxy ErrorHandler.
func (h *HTTPProxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // client gone or proxy closing
	}
	if errors.Is(err, ErrOutside) || errors.Is(err, ErrUnknownName) {
		h.refuse(w, r, r.URL.Host, err)
		return
	}
	h.log.Info("upstream failed", "client", r.RemoteAddr, "endpoint", r.URL.Host, "err", err)
	http.Error(w, fmt.Sprintf("agentnet proxy: cannot reach %s: %v", r.URL.Host, err), http.StatusBadGateway)
}

// dialUpstream is the Transport's DialContext: the same routing rule as
// CONNECT, and every connection is tracked so Close can close it.
func (h *HTTPProxy) dialUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := splitPort(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
	defer cancel()
	tgt, err := h.r.route(ctx, host, port)
	if err != nil {
		return nil, err
	}
	c, err := h.r.dial(ctx, network, tgt)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: &h.t}
	if !h.t.add(tc) {
		c.Close()
		return nil, net.ErrClosed
	}
	return tc, nil
}

// connect serves a CONNECT tunnel by hijacking the client connection.
func (h *HTTPProxy) connect(w http.ResponseWriter, r *http.Request) {
	host, port, err := splitPort(r.Host)
	if err != nil {
		http.Error(w, fmt.Sprintf("agentnet proxy: CONNECT needs host:port, got %q", r.Host), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.DialTimeout)
	defer cancel()
	tgt, err := h.r.route(ctx, host, port)
	if err != nil {
		h.refuse(w, r, r.Host, err)
		return
	}
	out, err := h.r.dial(ctx, "tcp", tgt)
	if err != nil {
		h.log.Info("connect failed", "client", r.RemoteAddr, "endpoint", r.Host, "err", err)
		http.Error(w, fmt.Sprintf("agentnet proxy: cannot reach %s: %v", r.Host, err), http.StatusBadGateway)
		return
	}
	if !h.t.add(out) {
		out.Close()
		return
	}
	defer h.t.remove(out)
	hj, ok := w.(http.Hijacker)
	if !ok {
		out.Close()
		http.Error(w, "agentnet proxy: connection cannot be hijacked", http.StatusInternalServerError)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		out.Close()
		h.log.Debug("hijack failed", "client", r.RemoteAddr, "err", err)
		return
	}
	if !h.t.add(c) {
		c.Close()
		out.Close()
		return
	}
	defer h.t.remove(c)
	c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		c.Close()
		out.Close()
		return
	}
	var client net.Conn = c
	if brw.Reader.Buffered() > 0 {
		client = &bufConn{Conn: c, r: brw.Reader}
	}
	h.log.Debug("connect", "client", r.RemoteAddr, "endpoint", r.Host, "overlay", tgt.overlay)
	join(client, out)
}
