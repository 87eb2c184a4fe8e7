package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/coordinator/console"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/internal/logthrottle"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
)

// Config configures a Coordinator. Zero optional fields take their default.
type Config struct {
	// DataDir is required. It is created (0700) if missing and holds
	// coord.db (bbolt), tls.key/tls.crt, wire.key (the map-signing key)
	// and admin.cred (0600). Restarting on the same DataDir keeps the
	// certificate pin, signing key, ULA prefix, admin secret and all nodes.
	DataDir string
	// Listen is required: the TCP address to serve HTTPS on, such as
	// "127.0.0.1:8443" or "127.0.0.1:0".
	Listen string
	// URL is optional: the base URL written into admin.cred and join
	// tokens. Default "https://" + the actual listen address. Set it when
	// listening on an unspecified address or behind a name.
	URL string
	// Prefix4 is optional: the IPv4 pool. Default wire.DefaultPrefix4.
	// Its network and broadcast addresses and wire.DefaultDNSIP are never
	// allocated. It cannot change once nodes are enrolled in DataDir.
	Prefix4 netip.Prefix
	// Domain is optional: the DNS suffix put into maps. Default
	// wire.DefaultDomain.
	Domain string
	// DefaultTokenTTL is optional: the lifetime of a token created with
	// TTLSeconds 0. Default 24h.
	DefaultTokenTTL time.Duration
	// Logger is optional. Default: discard.
	Logger *slog.Logger
	// Now is optional: the clock for token expiry, request-time checks and
	// timestamps. Default time.Now.
	Now func() time.Time
	// Store is optional: the state store. Default: bbolt at
	// DataDir/coord.db. New takes ownership; Close closes it.
	Store store.Store
	// MetricsListen is optional: a TCP address ("127.0.0.1:9100") where
	// Prometheus metrics are served at /metrics over plain HTTP. Default off.
	MetricsListen string
	// Console is optional: serve the web console under /console/ on the
	// same HTTPS listener (and redirect "/" to it); its login is the admin
	// secret. Default false.
	Console bool
	// RateLimits is optional: per-source limits on enrollment, the admin
	// API and console login (see RateLimits). Default: enroll 5/s burst
	// 20, admin 20/s burst 50, login 1/s burst 5; loopback is not exempt.
	RateLimits RateLimits
	// ConnLimits is optional: caps on open connections per source and in
	// all, the TLS handshake/header timeout and the idle timeout (see
	// ConnLimits). Default 64 per source, 4096 in all, 10 s, 2 min.
	ConnLimits ConnLimits
	// Relays is optional: the TURN/STUN relays put into every map, each
	// with a per-node credential (user = node name, 24 h, see relays.go).
	// Load them with turncred.LoadCred from each relay's relay.cred. Default:
	// none.
	Relays []turncred.Cred

	// AuditReset is optional, default false. On start the audit log
	// (DataDir/audit.jsonl) is verified; a broken log makes New fail with
	// audit.ErrBroken and the first bad record. With AuditReset the broken
	// log is renamed to audit.jsonl.broken-TIME and a new log starts with an
	// audit_reset record naming it.
	AuditReset bool

	// auditCheckpointEvery and auditCheckpointInterval override the audit
	// checkpoint cadence in this package's tests.
	auditCheckpointEvery    int
	auditCheckpointInterval time.Duration
	// keepalive overrides wire.StreamKeepalive in this package's tests.
	keepalive time.Duration
	// writeTimeout overrides streamWriteTimeout in this package's tests.
	writeTimeout time.Duration
	// replayPerSigner and replayTotal override the replay cache's bounds
	// in this package's tests.
	replayPerSigner, replayTotal int
	// listener replaces Listen in this package's tests: an in-memory
	// listener, so that a coordinator runs inside a synctest bubble.
	listener net.Listener
}

// Coordinator is a running control plane. Its methods are safe for
// concurrent use.
type Coordinator struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	store    *trackedStore
	signKey  ed25519.PrivateKey
	prefix4  netip.Prefix
	ula      netip.Prefix
	url      string
	pin      string
	cred     wire.AdminCred
	credPath string
	adminSum [32]byte // SHA-256 of the admin secret

	srv       *http.Server
	ln        net.Listener
	conns     *connLimiter    // wraps ln: connection caps (connlimit.go)
	baseCtx   context.Context // cancelled by Close; every request context derives from it
	cancel    context.CancelFunc
	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error

	audit   *audit.Log    // DataDir/audit.jsonl
	reports reportLimiter // node reports per node (audit_api.go)
	stats   counters
	limiter logthrottle.Limiter
	probes  probeLimiter
	console *console.Console // nil unless Config.Console
	metrics *metrics         // Config.MetricsListen; nil when off; set before serving
	sweep   sweeper          // node identity expiry (expiry.go)

	limits *rateLimiters // per-source request limits (ratelimit.go)
	replay *replayCache  // nonces of accepted signed requests (replay.go)

	// snapMu serialises snapshot refreshes; snap is read lock-free.
	// Lock order: snapMu before mu; snapMu before store calls (and the
	// trackedStore's own mu); no store call while holding mu. flipMu and
	// the locks inside stats, probes, reports, limits, audit and console
	// are leaves: nothing else is taken while one is held.
	snapMu sync.Mutex
	snap   atomic.Pointer[snapshot]
	idOf   map[string]uint32 // stable node ids (snapshot.go); guarded by snapMu

	flipMu      sync.Mutex // guards flipPending (stream.go changedSoon)
	flipPending bool

	mu       sync.Mutex // guards the fields below
	streams  map[string]*stream
	inflight int
	closing  bool
	drained  chan struct{} // closed when inflight reaches 0 after closing
}

// Close timeouts: the whole of Close stays under a second.
const (
	shutdownGrace = 500 * time.Millisecond // http.Server.Shutdown before forcing
	drainWait     = 300 * time.Millisecond // handlers to return after connections are gone
)

// New opens or creates the state in cfg.DataDir, starts listening and
// serving HTTPS, and returns once the listener is bound. On first start it
// creates the TLS key and self-signed certificate, the Ed25519 map-signing
// key, the IPv6 ULA /48, and the admin secret, and writes admin.cred.
func New(cfg Config) (_ *Coordinator, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("coordinator: Config.DataDir is required")
	}
	if cfg.Listen == "" && cfg.listener == nil {
		return nil, errors.New("coordinator: Config.Listen is required")
	}
	if !cfg.Prefix4.IsValid() {
		cfg.Prefix4 = wire.DefaultPrefix4
	}
	if err := checkPrefix4(cfg.Prefix4); err != nil {
		return nil, err
	}
	if cfg.Domain == "" {
		cfg.Domain = wire.DefaultDomain
	}
	if cfg.DefaultTokenTTL == 0 {
		cfg.DefaultTokenTTL = 24 * time.Hour
	} else if cfg.DefaultTokenTTL < 0 {
		return nil, fmt.Errorf("coordinator: DefaultTokenTTL %v is negative", cfg.DefaultTokenTTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := checkRelays(cfg.Relays); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.writeTimeout <= 0 {
		cfg.writeTimeout = streamWriteTimeout
	}
	if cfg.keepalive <= 0 {
		cfg.keepalive = wire.StreamKeepalive
	}
	limits, err := newRateLimiters(cfg.RateLimits)
	if err != nil {
		return nil, err
	}
	if cfg.ConnLimits, err = cfg.ConnLimits.withDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("coordinator: create data dir: %w", err)
	}

	c := &Coordinator{
		cfg:       cfg,
		log:       cfg.Logger,
		now:       cfg.Now,
		prefix4:   cfg.Prefix4,
		credPath:  filepath.Join(cfg.DataDir, fileCred),
		streams:   make(map[string]*stream),
		idOf:      make(map[string]uint32),
		limiter:   logthrottle.Limiter{Interval: 10 * time.Second},
		limits:    limits,
		replay:    newReplayCache(cfg.replayPerSigner, cfg.replayTotal),
		serveDone: make(chan struct{}),
	}
	st := cfg.Store
	if st == nil {
		if st, err = store.OpenBolt(filepath.Join(cfg.DataDir, fileDB)); err != nil {
			return nil, err
		}
	}
	c.store = newTrackedStore(st)
	defer func() {
		if err != nil {
			if c.ln != nil {
				c.ln.Close()
			}
			c.audit.Close()
			c.store.Close()
		}
	}()
	if c.ula, err = c.initMeta(); err != nil {
		return nil, err
	}
	if c.signKey, err = loadSigningKey(cfg.DataDir); err != nil {
		return nil, err
	}
	if c.audit, err = audit.Open(audit.Config{Path: audit.Path(cfg.DataDir), Key: c.signKey, Now: c.now, Logger: c.log,
		Reset: cfg.AuditReset, CheckpointEvery: cfg.auditCheckpointEvery, CheckpointInterval: cfg.auditCheckpointInterval}); err != nil {
		return nil, err
	}

	if c.ln = cfg.listener; c.ln == nil {
		if c.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("coordinator: listen: %w", err)
		}
	}
	c.conns = newConnLimiter(c.ln, cfg.ConnLimits, c.connCapped)
	listenAP, _ := netip.ParseAddrPort(c.ln.Addr().String())
	c.url = cfg.URL
	if c.url == "" {
		c.url = "https://" + c.ln.Addr().String()
	}
	u, err := url.Parse(c.url)
	if err != nil || !strings.HasPrefix(c.url, "https://") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("coordinator: URL %q is not https://host:port", c.url)
	}
	cert, leaf, err := loadOrCreateCert(cfg.DataDir, sanNames(listenAP.Addr(), u.Hostname()), c.now())
	if err != nil {
		return nil, err
	}
	c.pin = wire.CertPin(leaf)
	if err := c.initAdminCred(); err != nil {
		return nil, err
	}
	if err := c.refreshSnapshot(); err != nil {
		return nil, err
	}
	c.logDefaultPolicy()

	if err := c.startMetrics(); err != nil {
		return nil, err
	}
	handler := c.routes()
	if cfg.Console {
		if c.console, err = console.New(console.Config{Core: consoleCore{c}, Audit: c.audit, Logger: c.log, Now: c.now, WriteTimeout: cfg.writeTimeout}); err != nil {
			return nil, err
		}
		handler = c.console.Handler(handler)
	}

	c.baseCtx, c.cancel = context.WithCancel(context.Background())
	c.srv = newHTTPServer(handler, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}},
		cfg.ConnLimits, c.conns.connState)
	c.srv.BaseContext = func(net.Listener) context.Context { return c.baseCtx }
	c.srv.ErrorLog = slog.NewLogLogger(c.log.Handler(), slog.LevelDebug)
	go func() {
		defer close(c.serveDone)
		if err := c.srv.ServeTLS(c.conns, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("coordinator: serve stopped", "err", err)
		}
	}()
	c.startSweeper()
	c.log.Info("coordinator: serving", "endpoint", c.ln.Addr().String(), "url", c.url, "pin", c.pin,
		"key", wire.Fingerprint(c.PublicKey()), "prefix4", c.prefix4, "prefix6", c.ula,
		"conns_per_source", cfg.ConnLimits.PerSource, "conns_total", cfg.ConnLimits.Total)
	return c, nil
}

// Meta keys.
const (
	metaULA      = "ula_prefix"   // the IPv6 ULA /48, netip.Prefix text
	metaPrefix4  = "prefix4"      // the IPv4 pool the store was created with
	metaCursor4  = "ipam_cursor4" // host offset of the last IPv4 handed out, decimal
	metaAdminSum = "admin_sha256" // hex SHA-256 of the admin secret
)

// initMeta creates the ULA prefix on first start and checks Prefix4 against
// the one the store was created with.
func (c *Coordinator) initMeta() (netip.Prefix, error) {
	var ula netip.Prefix
	err := c.store.Update(func(tx store.Tx) error {
		b, err := tx.Meta(metaULA)
		if err != nil {
			return err
		}
		if b == nil {
			ula = newULA()
			if err := tx.PutMeta(metaULA, []byte(ula.String())); err != nil {
				return err
			}
		} else if ula, err = netip.ParsePrefix(string(b)); err != nil || ula.Bits() != 48 {
			return fmt.Errorf("coordinator: stored ULA prefix %q is not a /48", b)
		}
		b, err = tx.Meta(metaPrefix4)
		if err != nil {
			return err
		}
		if b != nil && string(b) != c.prefix4.String() {
			nodes, err := tx.Nodes()
			if err != nil {
				return err
			}
			if len(nodes) > 0 {
				return fmt.Errorf("coordinator: data dir %s was set up with Prefix4 %s, config says %s; nodes are enrolled, so it cannot change",
					c.cfg.DataDir, b, c.prefix4)
			}
		}
		return tx.PutMeta(metaPrefix4, []byte(c.prefix4.String()))
	})
	if err != nil {
		return ula, fmt.Errorf("coordinator: init state: %w", err)
	}
	return ula, nil
}

// URL returns the coordinator's base URL.
func (c *Coordinator) URL() string { return c.url }

// Pin returns the pin (wire.CertPin) of the coordinator's certificate.
func (c *Coordinator) Pin() string { return c.pin }

// PublicKey returns the Ed25519 key that verifies the maps it signs.
func (c *Coordinator) PublicKey() ed25519.PublicKey {
	return c.signKey.Public().(ed25519.PublicKey)
}

// AdminCredPath returns the path of admin.cred.
func (c *Coordinator) AdminCredPath() string { return c.credPath }

// AdminCred returns the admin credential (also written to AdminCredPath).
func (c *Coordinator) AdminCred() wire.AdminCred { return c.cred }

// Close stops the listener, ends every stream (their clients see the
// response end), waits for in-flight requests and closes the store. It
// returns within about a second and leaves no goroutines behind. Calling it
// again returns the first result.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		drained := make(chan struct{})
		if c.inflight == 0 {
			close(drained)
		} else {
			c.drained = drained
		}
		c.mu.Unlock()

		c.cancel() // streams and other requests watch baseCtx
		c.stopSweeper()
		c.stopMetrics()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		if err := c.srv.Shutdown(ctx); err != nil {
			c.srv.Close() // force: close the remaining connections
		}
		cancel()
		<-c.serveDone
		select {
		case <-drained:
		case <-time.After(drainWait):
			c.log.Warn("coordinator: requests still running at close")
		}
		c.closeErr = errors.Join(c.audit.Close(), c.store.Close())
		c.log.Info("coordinator: closed")
	})
	return c.closeErr
}
