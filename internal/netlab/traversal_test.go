package netlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The NAT-traversal matrix: real agentnet processes (coordinator, relay,
// two nodes in kernel TUN mode) in namespaces, the nodes behind real kernel
// NAT (iptables MASQUERADE in NAT namespaces). Each case asserts the path
// `agentnet status --json` reports and moves a checksummed transfer through
// it with curl.

// pathInfo is .peers[].path of `agentnet status --json`.
type pathInfo struct {
	Kind      string  `json:"kind"`
	Transport string  `json:"transport"`
	Endpoint  string  `json:"endpoint"`
	Relay     string  `json:"relay"`
	RTTMS     float64 `json:"rtt_ms"`
	Reason    string  `json:"reason"`
}

func (p pathInfo) String() string {
	s := p.Kind
	if p.Kind == "relay" {
		s += " " + p.Relay + " via " + p.Transport
	}
	if p.Endpoint != "" {
		s += " " + p.Endpoint
	}
	if p.Reason != "" {
		s += " (" + p.Reason + ")"
	}
	return s
}

// travLab is a lab with a coordinator and a relay on public hosts of
// router r, and nodes added with node().
type travLab struct {
	t         *testing.T
	l         *Lab
	r         *Router
	bin       string
	httpserve string
	dir       string
	token     string
}

func newTravLab(t *testing.T) *travLab {
	t.Helper()
	l := New(t)
	for _, tool := range []string{"curl", "sha256sum", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("NETLAB_REQUIRE") == "1" {
				t.Fatalf("%s not installed (NETLAB_REQUIRE=1)", tool)
			}
			t.Skipf("%s not installed (CI installs curl, coreutils and conntrack)", tool)
		}
	}
	tl := &travLab{t: t, l: l, bin: BuildAgentnet(t), httpserve: buildHTTPServe(t), dir: t.TempDir()}
	tl.r = l.AddRouter("r")
	coord, rel := tl.r.AddHost("coord"), tl.r.AddHost("relay")

	relayData := filepath.Join(tl.dir, "relay")
	rel.Start(t, tl.bin, "relay", "--listen", rel.Addr.String()+":3478", "--tls-listen", rel.Addr.String()+":5349",
		"--public-ip", rel.Addr.String(), "--data", relayData, "--name", "lab-relay",
		"--allow", "198.18.0.0/15") // the lab's addresses are in the benchmarking range
	cred := filepath.Join(relayData, "relay.cred")
	waitFile(t, cred, 15*time.Second)

	coordData := filepath.Join(tl.dir, "coord")
	cp := coord.Start(t, tl.bin, "coordinator", "--listen", coord.Addr.String()+":8443", "--data", coordData, "--relay", cred)
	if _, err := cp.WaitLine(regexp.MustCompile(`^coordinator at https://`), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	tl.token = strings.TrimSpace(coord.Run(t, tl.bin, "token", "create", "--admin", filepath.Join(coordData, "admin.cred"), "--reusable", "--ttl", "10m"))
	return tl
}

func waitFile(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within %v", path, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// travNode is a node process in kernel TUN mode.
type travNode struct {
	h     *Host
	name  string
	state string
	ip    string // overlay IPv4
	up    time.Time
}

var travUpRE = regexp.MustCompile(`^node (\S+) up: (\S+) (\S+) `)

func (tl *travLab) node(h *Host, name string) *travNode {
	tl.t.Helper()
	n := &travNode{h: h, name: name, state: filepath.Join(tl.dir, name)}
	p := h.Start(tl.t, tl.bin, "node", "--token", tl.token, "--name", name, "--state", n.state,
		"--listen", "0.0.0.0:41641", "--tun", "agentnet0")
	m, err := p.WaitLine(travUpRE, 30*time.Second)
	if err != nil {
		tl.t.Fatal(err)
	}
	n.ip, n.up = m[2], time.Now()
	return n
}

// path reads from's view of the path to peer.
func (tl *travLab) path(from *travNode, peer string) (pathInfo, bool) {
	tl.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _, err := from.h.Output(ctx, tl.bin, "status", "--state", from.state, "--json")
	if err != nil {
		return pathInfo{}, false
	}
	var st struct {
		Peers []struct {
			Name string          `json:"name"`
			Path json.RawMessage `json:"path"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		tl.t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, p := range st.Peers {
		if p.Name != peer {
			continue
		}
		var pi pathInfo
		if len(p.Path) > 0 && p.Path[0] == '{' {
			if err := json.Unmarshal(p.Path, &pi); err != nil {
				tl.t.Fatalf("status --json path of %s: %v: %s", peer, err, p.Path)
			}
		}
		return pi, pi.Kind != ""
	}
	return pathInfo{}, false
}

// waitPath polls until ok(path) or timeout, returning the last path seen.
func (tl *travLab) waitPath(from *travNode, peer string, timeout time.Duration, ok func(pathInfo) bool) (pathInfo, bool) {
	tl.t.Helper()
	deadline := time.Now().Add(timeout)
	var last pathInfo
	for {
		if p, found := tl.path(from, peer); found {
			last = p
			if ok(p) {
				return p, true
			}
		}
		if time.Now().After(deadline) {
			return last, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// serve starts httpserve on h's port 8080.
func (tl *travLab) serve(h *Host) {
	tl.t.Helper()
	p := h.Start(tl.t, tl.httpserve, "--listen", ":8080")
	if _, err := p.WaitLine(regexp.MustCompile(`^serving on`), 10*time.Second); err != nil {
		tl.t.Fatal(err)
	}
}

// fetch downloads size bytes from srv's httpserve through the overlay on
// from and checks the SHA-256. rate limits curl (e.g. "2M"), "" for none.
func (tl *travLab) fetch(from, srv *travNode, size int, rate string, timeout time.Duration) error {
	tl.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	limit := ""
	if rate != "" {
		limit = "--limit-rate " + rate
	}
	cmd := fmt.Sprintf("curl -sS --fail --retry 10 --retry-connrefused --retry-delay 1 --max-time %d %s http://%s:8080/bytes/%d | sha256sum",
		int(timeout.Seconds()), limit, srv.ip, size)
	out, errOut, err := from.h.Output(ctx, "bash", "-o", "pipefail", "-c", cmd)
	if err != nil {
		return fmt.Errorf("curl %d bytes from %s: %v: %s", size, srv.name, err, strings.TrimSpace(errOut))
	}
	if got, want := strings.Fields(out)[0], patternSHA256(size); got != want {
		return fmt.Errorf("curl %d bytes from %s: sha256 %s, want %s", size, srv.name, got, want)
	}
	return nil
}

// firstByte polls a tiny transfer until it succeeds and returns the time
// since both nodes were up.
func (tl *travLab) firstByte(a, b *travNode) time.Duration {
	tl.t.Helper()
	start := b.up
	if a.up.After(start) {
		start = a.up
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := a.h.Output(ctx, "curl", "-sS", "--fail", "--max-time", "2", fmt.Sprintf("http://%s:8080/bytes/1", b.ip))
		cancel()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			tl.t.Fatalf("no byte from %s to %s within 60 s: %v", b.name, a.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func isDirect(p pathInfo) bool { return p.Kind == "direct" }
func isRelay(p pathInfo) bool  { return p.Kind == "relay" }

// natPair builds two NAT hosts of the given kinds on the lab router, runs a
// node on each (server "search" on b) and reports both ends' paths once the
// first byte has crossed.
func natPair(t *testing.T, ka, kb NATKind, firewall bool) (*travLab, *travNode, *travNode, time.Duration) {
	tl := newTravLab(t)
	ha, hb := tl.r.AddNATHost("a", ka), tl.r.AddNATHost("b", kb)
	if firewall {
		ha.NAT.InputFirewall()
		hb.NAT.InputFirewall()
	}
	tl.serve(hb)
	b := tl.node(hb, "search")
	a := tl.node(ha, "planner")
	ttfb := tl.firstByte(a, b)
	return tl, a, b, ttfb
}

// matrixCase runs one NAT combination and checks the steady-state path
// against want (on both ends; wantB for search's side when not nil) and a
// checksummed 32 MiB transfer (its rate is logged: direct vs relay).
func matrixCase(t *testing.T, ka, kb NATKind, firewall bool, within time.Duration, want func(pathInfo) bool, wantDesc string, wantB ...func(pathInfo) bool) {
	t.Parallel()
	tl, a, b, ttfb := natPair(t, ka, kb, firewall)
	pa, ok := tl.waitPath(a, "search", within, want)
	if !ok {
		t.Fatalf("%v ↔ %v: planner's path to search is %v, want %s within %v of both nodes up", ka, kb, pa, wantDesc, within)
	}
	if len(wantB) > 0 {
		want = wantB[0]
	}
	pb, ok := tl.waitPath(b, "planner", 10*time.Second, want)
	if !ok {
		t.Fatalf("%v ↔ %v: search's path to planner is %v, want %s", ka, kb, pb, wantDesc)
	}
	const size = 32 << 20
	start := time.Now()
	if err := tl.fetch(a, b, size, "", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("MATRIX %v ↔ %v firewall=%v: planner→search %v; search→planner %v; first byte %v after both up; 32 MiB in %v (%.0f Mbit/s)",
		ka, kb, firewall, pa, pb, ttfb.Round(time.Millisecond), took.Round(time.Millisecond), size*8/took.Seconds()/1e6)
}

func TestTraversalConeCone(t *testing.T) {
	// The Linux conntrack clash (see overlay/probe.go): without a firewall
	// a probe reaching the other NAT first poisons its port; we must end up
	// direct anyway, and fast.
	matrixCase(t, NATCone, NATCone, false, 5*time.Second, isDirect, "direct")
}

func TestTraversalConeConeFirewall(t *testing.T) {
	matrixCase(t, NATCone, NATCone, true, 5*time.Second, isDirect, "direct")
}

func TestTraversalConeSymmetric(t *testing.T) {
	// Relay: the symmetric side gets a new public port for every
	// destination, and the cone side (Linux MASQUERADE filters by address
	// and port) drops packets from a port it never sent to. Direct would
	// need port prediction.
	matrixCase(t, NATCone, NATSymmetric, false, 15*time.Second, func(p pathInfo) bool { return p.Kind == "relay" || p.Kind == "direct" }, "relay or direct")
}

func TestTraversalSymmetricSymmetric(t *testing.T) {
	matrixCase(t, NATSymmetric, NATSymmetric, false, 15*time.Second, func(p pathInfo) bool { return isRelay(p) && p.Transport == "udp" }, "relay via udp")
}

// TestTraversalNoUDPCone: the UDP-blocked side (planner) reaches the relay
// over TCP or TLS; the cone side sends to planner's relayed address over
// its own UDP.
func TestTraversalNoUDPCone(t *testing.T) {
	matrixCase(t, NATNoUDP, NATCone, false, 20*time.Second, func(p pathInfo) bool {
		return isRelay(p) && (p.Transport == "tcp" || p.Transport == "tls")
	}, "relay via tcp or tls", isRelay)
}

// TestTraversalSameLAN: both nodes behind one NAT talk directly on their
// LAN addresses.
func TestTraversalSameLAN(t *testing.T) {
	t.Parallel()
	tl := newTravLab(t)
	ha := tl.r.AddNATHost("a", NATCone)
	hb := ha.NAT.AddHost("b")
	tl.serve(hb)
	b := tl.node(hb, "search")
	a := tl.node(ha, "planner")
	ttfb := tl.firstByte(a, b)
	lan := func(p pathInfo) bool {
		ap, err := netip.ParseAddrPort(p.Endpoint)
		return isDirect(p) && err == nil && ha.LAN.Contains(ap.Addr())
	}
	p, ok := tl.waitPath(a, "search", 10*time.Second, lan)
	if !ok {
		t.Fatalf("path %v, want direct on the LAN %v", p, ha.LAN)
	}
	if err := tl.fetch(a, b, 8<<20, "", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("MATRIX same LAN: planner→search %v; first byte %v", p, ttfb.Round(time.Millisecond))
}

// TestTraversalRelayThenDirect: UDP between the two sites is blocked at
// start, so the nodes meet on the relay; a rate-limited transfer is running
// when the block is lifted, the path upgrades to direct, and the transfer
// finishes intact.
func TestTraversalRelayThenDirect(t *testing.T) {
	t.Parallel()
	tl := newTravLab(t)
	ha, hb := tl.r.AddNATHost("a", NATCone), tl.r.AddNATHost("b", NATCone)
	unblock := ha.NAT.BlockUDP(hb.PublicAddr)
	defer unblock()
	tl.serve(hb)
	b := tl.node(hb, "search")
	a := tl.node(ha, "planner")
	ttfb := tl.firstByte(a, b)
	p, ok := tl.waitPath(a, "search", 10*time.Second, isRelay)
	if !ok {
		t.Fatalf("with UDP between the sites blocked: path %v, want relay", p)
	}
	t.Logf("blocked: %v, first byte after %v", p, ttfb.Round(time.Millisecond))

	// Slow probe rounds are 40 s apart (longer than the 30 s conntrack
	// timeout, see overlay/probe.go): the upgrade can take that long, and
	// the rounds while UDP was blocked may leave a conntrack clash that
	// costs the first one. The window covers three rounds; the transfer
	// (1 MB/s) spans the first two.
	const size = 96 << 20
	done := make(chan error, 1)
	go func() { done <- tl.fetch(a, b, size, "1M", 160*time.Second) }()
	time.Sleep(3 * time.Second)
	unblock()
	unblocked := time.Now()
	p, ok = tl.waitPath(a, "search", 135*time.Second, isDirect)
	upgraded := ok
	if !ok {
		natA, natB := ha.NAT.Run(t, "conntrack", "-L", "-p", "udp"), hb.NAT.Run(t, "conntrack", "-L", "-p", "udp")
		t.Logf("NAT a conntrack:\n%s\nNAT b conntrack:\n%s", natA, natB)
		// The known failure (issue 18 item 3, still open): an UNREPLIED
		// entry the peer's ping left at our NAT while UDP was blocked makes
		// the NAT map our own ping to another port, and every later round
		// refreshes it. Any other way of staying relayed is a failure.
		clash := strings.Contains(natA, "src="+hb.PublicAddr.String()+" dst="+ha.PublicAddr.String()) && strings.Contains(natA, "[UNREPLIED]")
		if !clash {
			t.Fatalf("after unblocking: path %v, want direct", p)
		}
		t.Logf("after unblocking: path %v, want direct: the conntrack clash of issue 18 item 3", p)
	} else {
		t.Logf("MATRIX relay→direct: upgraded to %v %v after unblocking", p, time.Since(unblocked).Round(time.Millisecond))
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("transfer across the upgrade: %v", err)
		}
	case <-time.After(170 * time.Second):
		t.Fatal("transfer did not finish")
	}
	if !upgraded {
		t.Skip("relay→direct upgrade lost to the NAT conntrack clash (issue 18 item 3, open); the transfer itself finished intact over the relay")
	}
}

// TestTraversalRebind: a NAT loses its state mid-transfer (conntrack flushed,
// new public ports); the stream survives and the path comes back.
func TestTraversalRebind(t *testing.T) {
	t.Parallel()
	tl, a, b, _ := natPair(t, NATCone, NATCone, false)
	if p, ok := tl.waitPath(a, "search", 15*time.Second, isDirect); !ok {
		t.Fatalf("before rebinding: path %v, want direct", p)
	}
	const size = 24 << 20
	done := make(chan error, 1)
	go func() { done <- tl.fetch(a, b, size, "2M", 90*time.Second) }()
	time.Sleep(3 * time.Second)
	a.h.NAT.Rebind()
	rebound := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("transfer across the rebinding: %v", err)
		}
	case <-time.After(100 * time.Second):
		t.Fatal("transfer did not finish")
	}
	p, _ := tl.path(a, "search")
	t.Logf("MATRIX rebind: transfer intact; path now %v (%v after rebinding)", p, time.Since(rebound).Round(time.Millisecond))
}
