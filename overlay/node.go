package overlay

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"

	agentdns "github.com/agentnet/agentnet/dns"
	"github.com/agentnet/agentnet/internal/metricsserver"
	"github.com/agentnet/agentnet/netstack"
	"github.com/agentnet/agentnet/wire"
)

// Config configures a Node. Each field says whether it is required and its
// default.
type Config struct {
	// StateDir holds keys, coordinator trust, the cached signed map and the
	// local API socket. Required; created 0700.
	StateDir string
	// Token is the join token. Required on first start only; ignored once
	// the node is enrolled.
	Token string
	// Name is the agent name asked for at enrollment (a DNS label).
	// Required on first start; the coordinator keeps it afterwards.
	Name string
	// ListenAddr is the node's UDP socket. Optional, default 0.0.0.0:0. A
	// specific IP means only that IP is advertised to peers.
	ListenAddr netip.AddrPort
	// PacketConn carries the node's WireGuard, disco and STUN traffic
	// instead of a UDP socket on ListenAddr (BindConfig.PacketConn), for
	// tests and custom transports such as pion's vnet. Optional; default
	// nil: a real UDP socket on ListenAddr. The node owns it from New on
	// and closes it on Close (or when New fails). With it the node makes no
	// TURN allocation (relay.Allocate dials real sockets, which must never
	// see this transport's addresses) but still asks the map's relays'
	// UDP addresses for its mapped address (STUN) through it; it
	// advertises its local address only when bound to a specific IP.
	PacketConn net.PacketConn
	// DNSListen is a host address ("127.0.0.1:5301") where the built-in DNS
	// also answers, over UDP and TCP. Optional, default off. Inside the
	// overlay it always answers at wire.DefaultDNSIP:53. Either answers
	// only overlay sources, and this one loopback too: other sources get
	// nothing (counted as result "refused_source").
	DNSListen string
	// DNSUpstream ("ip:port") receives queries for names outside the
	// overlay domain. Optional; default: with AcceptDNS the first
	// nameserver /etc/resolv.conf named before the takeover, otherwise
	// (or when it names none) such queries are REFUSED.
	DNSUpstream string
	// MTU of the overlay interface. Optional, default 1280.
	MTU int
	// TUN names a kernel TUN device (e.g. "agentnet0") to carry agent
	// traffic through the host's own stack (needs CAP_NET_ADMIN). Optional;
	// default: netstack mode, a gVisor stack inside this process.
	TUN string
	// AcceptDNS points the host resolver (/etc/resolv.conf) at the built-in
	// DNS while the node runs (kernel TUN mode only). Optional, default off:
	// the host's resolver config is never touched unless asked.
	AcceptDNS bool
	// Frontends for programs that cannot embed a node (netstack mode
	// mostly). Optional, default none.
	Frontends Frontends
	// MaxConnsPerPeer caps the inbound TCP connections from one source
	// address open at once: a peer's overlay IPv4 or IPv6 in the netstack
	// (every listener: --expose, Listen, DNS), a client address in each
	// front-end. Beyond it a connection is reset and counted
	// (agentnet_conn_refused_total{reason="per_source"}). Optional,
	// default 256; negative fails New in netstack mode or with front-ends.
	MaxConnsPerPeer int
	// MaxConns caps all inbound TCP connections open at once, in the
	// netstack and in each front-end (reason="total"). Optional, default
	// 4096; negative as for MaxConnsPerPeer.
	MaxConns int
	// EnrollTimeout bounds how long first contact with the coordinator is
	// retried while it is unreachable. Optional, default 60s.
	EnrollTimeout time.Duration
	// MetricsListen is a TCP address ("127.0.0.1:9100") where Prometheus
	// metrics are served at /metrics over plain HTTP. Optional, default off.
	MetricsListen string
	// Logger receives structured logs. Optional, default slog.Default().
	Logger *slog.Logger
	// ReportInterval is how often queued security events (filter denials,
	// channel up/down) are sent to the coordinator's audit log. Optional,
	// default 5s; negative turns reports off.
	ReportInterval time.Duration
	// ForceRelay makes every peer path go through the relay, never direct
	// (for debugging and for measuring the relay path, like Tailscale's
	// TS_DEBUG_ALWAYS_USE_DERP). Optional, default false.
	ForceRelay bool
	// KeyRotation is how often the node replaces its WireGuard key
	// (rotate.go). Optional: 0 means the default, 24h; negative disables
	// periodic rotation (Node.RotateKey still works).
	KeyRotation time.Duration
	// OnFilterDeny is called for every packet the packet filter denies
	// (an audit reporter batches them). It runs on the data path: it must
	// not block. Optional, default none (denials are still counted and
	// logged, rate-limited).
	OnFilterDeny func(FilterDenial)
	// Now is the node's clock: map and report times, status ages, key
	// rotation dates, the packet filter's conntrack and log intervals,
	// the built-in DNS's log intervals.
	// wireguard-go keeps its own (real) clock, so handshake ages and
	// channel up/down reports assume Now is close to it; testing/synctest
	// fakes both. Optional, default time.Now.
	Now func() time.Time
}

// Node is a running agentnet node. Its methods are safe for concurrent use.
//
// Lock order: rotMu before mapMu before mu. The data path (activatePeer,
// lazywg.go) takes only mu; no I/O (UAPI, disk, DNS) happens under mu in
// applyMap, which does it under mapMu alone.
type Node struct {
	cfg       Config
	log       *slog.Logger
	now       func() time.Time // Config.Now
	lock      *stateLock       // on StateDir, from New to the end of Close
	state     *nodeState
	wgPub     [32]byte // this node's WireGuard public key; changed under mu by rotate.go
	ctl       *controlClient
	bind      *Bind
	pbind     *peerBind     // bind as wireguard-go sees it: endpoints are peers
	plane     dataplane     // netstack or kernel TUN
	filter    *filterDevice // the plane's device as wireguard-go sees it
	dev       *device.Device
	dns       []*agentdns.Server // in-overlay server, then the host one if any
	dnsAP     netip.AddrPort     // host DNS address, when Config.DNSListen is set
	local     *localAPI
	frontends []io.Closer           // SOCKS5, HTTP proxy, forwards, exposes
	dnsTaken  bool                  // /etc/resolv.conf points at us (AcceptDNS)
	metrics   *metricsserver.Server // Config.MetricsListen; nil when off
	reports   *reporter             // security reports; nil when off

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // control loop
	// done is closed by stop (lifecycle.go): on a refusal or at Close.
	done     chan struct{}
	doneOnce sync.Once

	mapsRefused atomic.Uint64 // maps that failed verification or did not fit
	// keyConflictPeers counts map peers dropped because their WireGuard
	// key was another peer's or ours (keyconflict.go).
	keyConflictPeers atomic.Uint64
	conflictWarned   map[[32]byte]bool // keys warned about; guarded by mapMu
	freeMem          chan struct{}     // asks memoryLoop to return freed memory; cap 1

	rotMu sync.Mutex // serialises WireGuard key rotations (rotate.go); taken before mapMu and mu

	// mapMu serialises map applications (applyMap) and the refusal
	// (lifecycle.go), including their I/O. The data path never takes it.
	mapMu sync.Mutex
	// writeCache writes the signed map to the state directory
	// (saveCachedMap); a seam for tests that hold a map application in
	// its I/O.
	writeCache func(dir string, s *signedMap) error

	paths pathsGlue // path discovery: publishing candidates, relay, probes (publish.go)

	mu         sync.Mutex    // guards the fields below
	testRelays []wire.Relay  // tests: relays used instead of the map's
	mapWait    chan struct{} // closed and replaced whenever a map is applied
	nm         *wire.Map
	peers      map[[32]byte]wgPeer // every map peer
	active     map[[32]byte]wgPeer // the peers configured in wireguard-go (lazywg.go)
	lazy       *lazyWG
	connected  bool // netmap stream is up
	lastMap    time.Time
	closed     bool
	refused    *wire.ErrorResponse // the coordinator revoked or expired this node (lifecycle.go)
}

// New starts a node: it enrolls (first start) or loads its cached signed map
// (restart), brings up the WireGuard device on a netstack, the DNS server,
// the local API, and keeps following the coordinator in the background.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.StateDir == "" {
		if cfg.PacketConn != nil {
			cfg.PacketConn.Close()
		}
		return nil, errors.New("overlay: Config.StateDir is required (--state DIR)")
	}
	if cfg.MTU == 0 {
		cfg.MTU = defaultMTU
	}
	if cfg.KeyRotation == 0 {
		cfg.KeyRotation = DefaultKeyRotation
	}
	if cfg.EnrollTimeout == 0 {
		cfg.EnrollTimeout = defaultEnrollTimeout
	}
	if !cfg.ListenAddr.IsValid() {
		cfg.ListenAddr = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	fail := func(err error) (*Node, error) {
		if cfg.PacketConn != nil {
			cfg.PacketConn.Close()
		}
		return nil, err
	}
	// Every check before the first side effect (configcheck.go), the
	// state directory only once the token parses, and nothing in it
	// touched before it is ours (statelock.go).
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fail(fmt.Errorf("overlay: create state dir: %w", err))
	}
	lock, err := lockState(cfg.StateDir)
	if err != nil {
		return fail(err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, now: cfg.Now, lock: lock, writeCache: saveCachedMap, peers: make(map[[32]byte]wgPeer), active: make(map[[32]byte]wgPeer), freeMem: make(chan struct{}, 1), done: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.start(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context) error {
	st, signed, m, err := n.loadOrEnroll(ctx)
	if err != nil {
		return err
	}
	n.state = st
	n.log = n.log.With("node", m.Self.Name)
	if n.cfg.ReportInterval >= 0 { // before the data path starts: the filter's denials go here
		n.reports = newReporter(n, n.cfg.ReportInterval)
	}

	if n.cfg.TUN != "" {
		kp, err := newKernelPlane(n.cfg.TUN, n.cfg.MTU, m, n.log)
		if err != nil {
			return fmt.Errorf("overlay: kernel TUN mode: %w", err)
		}
		n.plane = kp
	} else {
		stack, err := netstack.New(netstack.Config{
			Addrs:  []netip.Addr{m.Self.IPv4, m.Self.IPv6, m.DNSIP},
			MTU:    n.cfg.MTU,
			Logger: n.log,

			MaxConnsPerSource: n.cfg.MaxConnsPerPeer,
			MaxConns:          n.cfg.MaxConns,
			Now:               n.cfg.Now,
		})
		if err != nil {
			return fmt.Errorf("overlay: netstack: %w", err)
		}
		n.plane = netstackPlane{stack}
	}
	priv, pub, err := st.wgKeys()
	if err != nil {
		return err
	}
	n.wgPub = pub
	n.lazy = &lazyWG{activate: n.activatePeer}
	if err := n.lazy.setKey(priv); err != nil {
		return fmt.Errorf("overlay: wireguard key: %w", err)
	}
	n.pbind = newPeerBind(peerBindConfig{Socket: n.bind, Self: pub, Logger: n.log, Now: n.now})
	n.pbind.forceRelay = n.cfg.ForceRelay
	n.pbind.lazy = n.lazy
	if err := n.setupPaths(); err != nil {
		return err
	}
	n.filter = newFilterDevice(n.plane.TUN(), filterConfig{Logger: n.log, OnDeny: n.onFilterDeny, Now: n.now})
	n.filter.lazy = n.lazy
	n.dev = device.NewDevice(n.filter, n.pbind, wgLogger(n.log, n.filter.wgLogged))
	// Paths are ours: wireguard-go must never replace a peer's endpoint
	// with a packet's source address.
	n.dev.DisableSomeRoamingForBrokenMobileSemantics()
	// Keep the port the endpoints were advertised with: wireguard-go
	// re-opens the bind on Up with listen_port.
	uapi := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(priv[:]), n.bind.LocalAddr().Port())
	if err := n.dev.IpcSet(uapi); err != nil {
		return fmt.Errorf("overlay: configure wireguard: %w", err)
	}
	if err := n.dev.Up(); err != nil {
		return fmt.Errorf("overlay: wireguard up: %w", err)
	}
	n.wg.Add(2)
	go n.activator()
	go n.memoryLoop()
	if n.cfg.AcceptDNS && n.cfg.DNSUpstream == "" {
		// Before acceptDNS rewrites /etc/resolv.conf: the resolvers the
		// host had keep answering names outside the overlay.
		if up := priorUpstream(n.cfg.StateDir, m.DNSIP); up != "" {
			n.cfg.DNSUpstream = up
			n.log.Info("--accept-dns: names outside the overlay go to the host's previous resolver", "endpoint", up)
		} else {
			n.log.Warn("--accept-dns: no previous resolver found in " + resolvConf + "; names outside the overlay will be REFUSED; set --dns-upstream IP:PORT to forward them")
		}
	}
	if err := n.startDNS(m); err != nil {
		return err
	}
	if err := n.applyMap(signed, m); err != nil {
		return err
	}
	if n.local, err = startLocalAPI(n); err != nil {
		return err
	}
	if n.cfg.AcceptDNS {
		if err := acceptDNS(n.cfg.StateDir, m.DNSIP.String(), m.Domain); err != nil {
			return fmt.Errorf("overlay: --accept-dns: %w", err)
		}
		n.dnsTaken = true
	}
	if err := n.startFrontends(n.cfg.Frontends); err != nil {
		return err
	}
	if err := n.startMetrics(); err != nil {
		return err
	}
	n.log.Info("node up", "ipv4", m.Self.IPv4, "ipv6", m.Self.IPv6, "did", m.Self.DID,
		"endpoint", n.bind.LocalAddr(), "peers", len(m.Peers))
	n.wg.Add(1)
	go n.controlLoop()
	if n.reports != nil {
		n.wg.Go(func() { n.reports.loop(n.ctx) })
	}
	n.startRotation()
	n.startPaths()
	return nil
}

// loadOrEnroll returns the node's state and a verified map, enrolling with
// the token on first start.
func (n *Node) loadOrEnroll(ctx context.Context) (*nodeState, *signedMap, *wire.Map, error) {
	dir := n.cfg.StateDir
	st, ok, err := loadState(dir, n.now())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("overlay: %w", err)
	}
	if ok && st.Refused != nil {
		return nil, nil, nil, refusedError(dir, st.Refused)
	}
	if !ok || !st.enrolled() {
		if n.cfg.Token == "" {
			return nil, nil, nil, fmt.Errorf("overlay: %s holds no enrolled node; pass a join token (--token) on first start", dir)
		}
		tok, err := wire.ParseToken(n.cfg.Token)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("overlay: %w", err)
		}
		if !ok {
			if st, err = newState(n.now()); err != nil {
				return nil, nil, nil, err
			}
		}
		st.CoordinatorURL, st.CoordinatorPin = tok.URL, tok.Pin
		if err := saveState(dir, st); err != nil {
			return nil, nil, nil, fmt.Errorf("overlay: save state: %w", err)
		}
	} else if n.cfg.Token != "" {
		n.log.Info("already enrolled; ignoring the join token", "state", dir)
	}
	n.ctl = newControlClient(st.CoordinatorURL, st.CoordinatorPin, st.identity())
	n.bind = NewBind(BindConfig{ListenAddr: n.cfg.ListenAddr, PacketConn: n.cfg.PacketConn, Logger: n.log})
	if _, _, err := n.bind.Open(0); err != nil {
		return nil, nil, nil, fmt.Errorf("overlay: open UDP socket %s: %w", n.cfg.ListenAddr, err)
	}

	var cacheErr error
	if st.enrolled() {
		signed, m, err := loadCachedMap(dir, st.CoordinatorKey)
		if err == nil && m.Self.DID == wire.DID(st.identity().Public().(ed25519.PublicKey)) {
			n.log.Info("starting from cached network map", "serial", m.Serial, "peers", len(m.Peers))
			return st, signed, m, nil
		}
		if err == nil {
			err = errors.New("cached network map is for another node")
		}
		n.log.Warn("cached network map unusable; asking the coordinator", "err", err)
		cacheErr = err
	}
	resp, err := n.enrollRetry(ctx, st)
	if err != nil {
		if cacheErr != nil {
			return nil, nil, nil, fmt.Errorf("%w (and the cached map is unusable: %v)", err, cacheErr)
		}
		return nil, nil, nil, err
	}
	if st.enrolled() && !ed25519.PublicKey(st.CoordinatorKey).Equal(ed25519.PublicKey(resp.CoordinatorKey)) {
		return nil, nil, nil, fmt.Errorf("overlay: coordinator signing key changed (%s, was %s); refusing it", wire.Fingerprint(resp.CoordinatorKey), wire.Fingerprint(st.CoordinatorKey))
	}
	m, err := resp.Map.Verify(resp.CoordinatorKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("overlay: enrollment map: %w", err)
	}
	st.CoordinatorKey, st.Name = resp.CoordinatorKey, resp.Node.Name
	if err := saveState(dir, st); err != nil {
		return nil, nil, nil, fmt.Errorf("overlay: save state: %w", err)
	}
	n.log.Info("enrolled", "node", resp.Node.Name, "did", resp.Node.DID, "ipv4", resp.Node.IPv4, "coordinator", wire.Fingerprint(resp.CoordinatorKey))
	return st, &signedMap{Signed: *resp.Map}, m, nil
}

// enrollRetry enrolls, retrying transient failures (coordinator down) with
// progress logs until EnrollTimeout; permanent refusals fail at once.
func (n *Node) enrollRetry(ctx context.Context, st *nodeState) (*wire.EnrollResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.EnrollTimeout)
	defer cancel()
	// No endpoints yet: they are published by the first update, once the
	// WireGuard device is up with its peers configured. Peers only start
	// handshakes towards published endpoints, so none is sent to a node
	// that would drop it (and then wait out the 5 s handshake retry).
	req := wire.EnrollRequest{Name: n.cfg.Name, WGKey: n.wgPublic(st), DiscoKey: discoPublic(st)}
	if !st.enrolled() {
		req.Token = n.cfg.Token
		if req.Name == "" {
			return nil, errors.New("overlay: first start needs a node name (--name)")
		}
	}
	for attempt := 1; ; attempt++ {
		resp, err := n.ctl.enroll(ctx, req)
		if err == nil {
			return resp, nil
		}
		if isPermanent(err) {
			return nil, fmt.Errorf("overlay: enroll with %s: %w", st.CoordinatorURL, err)
		}
		wait := backoff(attempt)
		if ce := (*ControlError)(nil); errors.As(err, &ce) && ce.RetryAfter > wait {
			wait = ce.RetryAfter // 429 rate_limited: the coordinator says when
		}
		n.log.Info("waiting for coordinator", "coordinator", st.CoordinatorURL, "attempt", attempt, "wait", wait, "err", err)
		if !sleepCtx(ctx, wait) {
			return nil, fmt.Errorf("overlay: coordinator %s unreachable for %v: %w; check it runs and the URL in the token", st.CoordinatorURL, n.cfg.EnrollTimeout, err)
		}
	}
}

func (n *Node) wgPublic(st *nodeState) string {
	_, pub, _ := st.wgKeys()
	return wire.WGKeyString(pub)
}

// endpoints returns the UDP addresses peers may reach this node at: the
// bound address, or every non-loopback interface address when bound to
// the unspecified address.
func (n *Node) endpoints() []netip.AddrPort {
	la := n.bind.LocalAddr()
	if !la.Addr().IsUnspecified() {
		return []netip.AddrPort{la}
	}
	if n.cfg.PacketConn != nil {
		return nil // the host's interfaces are not that transport's addresses
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	// Never advertise an address inside the overlay (our own TUN
	// device's): WireGuard to it would loop into the tunnel.
	overlay := []netip.Prefix{wire.DefaultPrefix4}
	n.mu.Lock()
	if n.nm != nil {
		overlay = append(overlay, n.nm.Prefix4, n.nm.Prefix6)
	}
	n.mu.Unlock()
	var out []netip.AddrPort
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr().Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || (la.Addr().Is4() && !ip.Is4()) || inAny(overlay, ip) {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, la.Port()))
		if len(out) == maxAdvertised {
			break
		}
	}
	return out
}

func inAny(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.IsValid() && p.Contains(ip) {
			return true
		}
	}
	return false
}

// controlLoop follows the coordinator: report endpoints, then stream maps;
// reconnect with backoff whenever the stream ends, until Close.
func (n *Node) controlLoop() {
	defer n.wg.Done()
	for attempt := 1; ; attempt++ {
		err := n.followOnce()
		n.setConnected(false)
		if n.ctx.Err() != nil || n.onRefusal(err) {
			return
		}
		if errors.Is(err, wire.ErrVersion) {
			n.log.Error("coordinator speaks an incompatible control protocol; upgrade one side", "err", err)
		} else {
			n.log.Warn("lost coordinator; peers keep working from the cached map", "err", err, "attempt", attempt)
		}
		if !sleepCtx(n.ctx, backoff(attempt)) {
			return
		}
	}
}

func (n *Node) followOnce() error {
	if err := n.publish(); err != nil {
		return err
	}
	// The map this stream has built: its first whole map and the deltas
	// since. A delta applies to it, not to whatever map the node holds
	// (an update response may have brought a newer one meanwhile).
	var (
		held    *signedMap
		heldMap *wire.Map
	)
	return n.ctl.streamMaps(n.ctx, func(msg *wire.StreamMessage) error {
		n.setConnected(true)
		if msg.Type == wire.MsgMap {
			held, heldMap = n.onSignedMap(&signedMap{Signed: *msg.Map})
			return nil
		}
		if heldMap == nil {
			n.mapsRefused.Add(1)
			return errors.New("netmap delta before any map on this stream; reopening it")
		}
		d, err := msg.Delta.VerifyDelta(n.state.CoordinatorKey)
		if err != nil {
			n.mapsRefused.Add(1)
			n.log.Error("refusing network map delta", "reason", "bad signature", "err", err)
			return fmt.Errorf("refused a netmap delta (%w); reopening the stream for a whole map", err)
		}
		m, err := heldMap.Apply(d)
		if err != nil {
			n.mapsRefused.Add(1)
			n.log.Error("refusing network map delta", "err", err)
			return fmt.Errorf("refused a netmap delta (%w); reopening the stream for a whole map", err)
		}
		held, heldMap = held.withDelta(msg.Delta), m
		if err := n.applyMap(held, m); err != nil {
			n.mapsRefused.Add(1)
			n.log.Error("refusing network map", "err", err)
		}
		return nil
	}, n.onProbe)
}

// onSignedMap verifies and applies a map from the coordinator; a map that
// fails verification is refused and logged, never applied. It returns the
// map if it verified (nil otherwise).
func (n *Node) onSignedMap(s *signedMap) (*signedMap, *wire.Map) {
	m, err := s.open(n.state.CoordinatorKey)
	if err != nil {
		n.mapsRefused.Add(1)
		n.log.Error("refusing network map", "reason", "bad signature", "err", err)
		return nil, nil
	}
	if err := n.applyMap(s, m); err != nil {
		n.mapsRefused.Add(1)
		n.log.Error("refusing network map", "err", err)
	}
	return s, m
}

// applyMap installs a verified map: WireGuard peers (diffed), DNS records,
// and the on-disk cache. Maps older than the current one are ignored.
//
// It works in three steps so that no I/O happens under n.mu, which the
// data path waits on (activatePeer, first packet to a lazy peer):
//
//  1. under n.mu: check the serial, build the new peer set and the UAPI
//     diff, and publish peers/active to the data path (filter, paths,
//     lazy index);
//  2. without n.mu: configure wireguard-go (IpcSet), set the DNS records
//     and write the cache (fsync'd);
//  3. under n.mu: make the map the one in force (n.nm) and wake WaitMap.
//
// mapMu serialises applications (and refuse) across all three steps, so
// the next map's diff is against what this one configured. Step 2 may run
// beside activatePeer's own IpcSet: that one only adds a peer in the new
// map and not in the new active set, which this diff never touches.
func (n *Node) applyMap(s *signedMap, m *wire.Map) error {
	did := wire.DID(n.state.identity().Public().(ed25519.PublicKey))
	if m.Self.DID != did {
		return fmt.Errorf("map is for %s, not this node (%s)", m.Self.DID, did)
	}
	n.mapMu.Lock()
	defer n.mapMu.Unlock()

	// Step 1: the diff, under the lock.
	n.mu.Lock()
	if n.closed || n.refused != nil {
		n.mu.Unlock()
		return nil
	}
	if n.nm != nil {
		if m.Serial < n.nm.Serial {
			n.mu.Unlock()
			n.log.Debug("ignoring older network map", "serial", m.Serial, "have", n.nm.Serial)
			return nil
		}
		if m.Self.IPv4 != n.nm.Self.IPv4 || m.Self.IPv6 != n.nm.Self.IPv6 {
			n.log.Error("coordinator changed this node's addresses; restart the node to take them", "ipv4", m.Self.IPv4)
		}
	}
	newSerial := n.nm == nil || m.Serial != n.nm.Serial
	mapPeers := n.keyConflicts(m.Peers, n.wgPub)
	peers := make(map[[32]byte]wgPeer, len(mapPeers))
	recs := []agentdns.Record{{Name: m.Self.Name, IPv4: m.Self.IPv4, IPv6: m.Self.IPv6}}
	for _, p := range mapPeers {
		wp, err := peerFromNode(p)
		if err != nil {
			n.log.Warn("skipping peer", "peer", p.Name, "err", err)
			continue
		}
		wp.keepalive = keepaliveFor(n.wgPub, wp.key)
		peers[wp.key] = wp
		recs = append(recs, agentdns.Record{Name: p.Name, IPv4: p.IPv4, IPv6: p.IPv6})
	}
	// Policy first: a removed peer's traffic stops before its session does.
	n.filter.setFilter(m.Filter, m.Self.IPv4, m.Self.IPv6)
	// Paths first: a new peer's first initiation then finds its path.
	n.pbind.setPeerInfo(peerInfos(mapPeers, []netip.Prefix{m.Prefix4, m.Prefix6, wire.DefaultPrefix4}, n.log))
	n.kickRelay()
	active := n.activeFor(peers)
	diff := wgDiff(n.active, active)
	n.peers, n.active = peers, active
	n.lazy.setPeers(peers, active)
	n.mu.Unlock()

	// Step 2: the I/O, outside the lock.
	if diff != "" {
		n.log.Debug("wireguard peers changed", "serial", m.Serial, "uapi", diff)
		if err := n.dev.IpcSet(diff); err != nil {
			// n.active already says configured; the device refusing a
			// diff built from verified keys means it is closing.
			return fmt.Errorf("configure wireguard peers: %w", err)
		}
	}
	n.pbind.flush()
	for _, d := range n.dns {
		d.SetRecords(recs)
	}
	if newSerial {
		if err := n.writeCache(n.cfg.StateDir, s); err != nil {
			n.log.Warn("could not cache network map", "err", err)
		}
	}

	// Step 3: the map is in force.
	n.mu.Lock()
	n.nm = m
	if n.mapWait != nil {
		close(n.mapWait)
	}
	n.mapWait = make(chan struct{})
	n.lastMap = n.now()
	n.mu.Unlock()
	n.log.Debug("applied network map", "serial", m.Serial, "peers", len(m.Peers))
	if len(m.Peers) >= freeMemoryMinPeers {
		n.wantFreeMemory()
	}
	return nil
}

func (n *Node) setConnected(v bool) {
	n.mu.Lock()
	n.connected = v
	n.mu.Unlock()
}

// startDNS serves agent names inside the overlay (DNSIP:53) and, when
// configured, on the host.
func (n *Node) startDNS(m *wire.Map) error {
	// Overlay sources only (issue 17): a kernel-TUN host that forwards IPv4
	// would otherwise answer whatever its LAN routes to the DNS IP. DNSIP
	// itself is the source of the node's own queries in netstack mode.
	overlay := []netip.Prefix{netip.PrefixFrom(m.DNSIP, m.DNSIP.BitLen())}
	for _, p := range []netip.Prefix{m.Prefix4, m.Prefix6} {
		if p.IsValid() {
			overlay = append(overlay, p)
		}
	}
	dcfg := agentdns.Config{Domain: m.Domain, Upstream: n.cfg.DNSUpstream, Logger: n.log, Allow: overlay, Now: n.now}
	in := agentdns.New(dcfg)
	n.dns = append(n.dns, in)
	ap := netip.AddrPortFrom(m.DNSIP, 53)
	pc, l, err := n.plane.ListenDNS(ap)
	if err != nil {
		return fmt.Errorf("overlay: dns on %s: %w", ap, err)
	}
	if err := in.Serve(pc, l); err != nil {
		return fmt.Errorf("overlay: dns on %s: %w", ap, err)
	}
	if n.cfg.DNSListen != "" {
		// The host listener also answers the host's own resolver.
		dcfg.Allow = append(overlay, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
		host := agentdns.New(dcfg)
		n.dns = append(n.dns, host)
		ap, err := host.ListenAndServe(n.cfg.DNSListen)
		if err != nil {
			return fmt.Errorf("overlay: dns on %s: %w", n.cfg.DNSListen, err)
		}
		n.dnsAP = ap
	}
	return nil
}

// DNSAddr is where the built-in DNS answers on the host (Config.DNSListen
// with the port filled in), or the zero value when it does not.
func (n *Node) DNSAddr() netip.AddrPort { return n.dnsAP }

// Close stops the node: control loop, local API, DNS, WireGuard and the
// netstack. Blocked Dial/Accept/Read calls return errors. Idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.stop()
	n.metrics.Close()
	if n.local != nil {
		n.local.close()
	}
	n.wg.Wait()
	for _, f := range n.frontends {
		f.Close()
	}
	if n.dnsTaken {
		if err := restoreDNS(n.cfg.StateDir); err != nil {
			n.log.Error("could not restore the host resolver", "err", err)
		}
	}
	for _, d := range n.dns {
		d.Close()
	}
	if n.dev != nil {
		// A map application in its I/O step finishes first; later ones
		// see closed and configure nothing.
		n.mapMu.Lock()
		n.dev.Close() // closes the bind and the TUN side of the stack
		n.mapMu.Unlock()
	} else if n.bind != nil {
		n.bind.Close()
	}
	if n.plane != nil {
		n.plane.Close() // kernel mode: removes the device, its addresses and routes
	}
	if n.cfg.PacketConn != nil {
		n.cfg.PacketConn.Close() // after the bind: it only unblocks its readers
	}
	if n.ctl != nil {
		n.ctl.close()
	}
	n.lock.unlock() // last: the state dir is free for the next node
	return nil
}

func backoff(attempt int) time.Duration {
	d := time.Duration(min(attempt, backoffSteps)) * time.Second
	if attempt > backoffSteps {
		d = backoffMax
	}
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// wgLogger routes wireguard-go's logs into slog at Debug (its errors at
// Warn: they are per-packet and frequent under attack). Verbose lines are
// offered to seen first (unformatted); those it returns true for are not
// logged again.
func wgLogger(l *slog.Logger, seen func(format string, args []any) bool) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if seen != nil && seen(format, args) {
				return
			}
			if l.Enabled(context.Background(), slog.LevelDebug) {
				l.Debug(fmt.Sprintf(format, args...), "component", "wireguard")
			}
		},
		Errorf: func(format string, args ...any) {
			l.Warn(fmt.Sprintf(format, args...), "component", "wireguard")
		},
	}
}
