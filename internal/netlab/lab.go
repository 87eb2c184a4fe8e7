// Package netlab builds throw-away network labs out of Linux network
// namespaces for end-to-end tests: hosts joined through router namespaces,
// optionally behind NAT namespaces, with commands and long-running processes
// started inside them.
//
// Everything runs through `ip` and `iptables`, always inside the lab's own
// namespaces (`ip -n NS ...` / `ip netns exec NS ...`): the lab never adds
// addresses or routes to the host namespace, never changes its sysctls and
// never sends traffic from it. Lab addresses come only from 198.18.0.0/15:
//
//	198.18.0.0/24     backbone joining the routers (router i is 198.18.0.(i+1))
//	198.18.N.0/24     public LAN N (router .1, host or NAT WAN side .2), N = 1..255
//	198.19.N.0/24     private LAN behind NAT number N (NAT .1, host .2)
//
// Names: every namespace of a lab is "anl<pid>_<start>_<rand>-<name>", where
// pid and start (from /proc/<pid>/stat) identify the test process that owns
// the lab. New removes namespaces (and /etc/netns dirs) of labs whose owner
// process is gone, killing whatever still runs inside them, so a crashed run
// leaves nothing behind for long; labs of live processes (parallel tests, other
// test binaries) are never touched.
//
// Lab tests need root. New skips the test when the lab cannot be built, unless
// NETLAB_REQUIRE=1 is set, in which case it fails instead.
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// NamePrefix starts the name of every namespace a lab creates.
const NamePrefix = "anl"

// etcNetns is where `ip netns exec` looks for per-namespace /etc files.
const etcNetns = "/etc/netns"

// cmdTimeout bounds each setup/teardown command (ip, iptables).
const cmdTimeout = 15 * time.Second

// nsNameRE matches lab namespace names: owner pid, owner start time, random.
var nsNameRE = regexp.MustCompile(`^` + NamePrefix + `(\d+)_(\d+)_([0-9a-f]+)-`)

// Lab is a set of hosts (network namespaces) joined through router namespaces.
// Create it with New; it is torn down by Close, which New registers with
// t.Cleanup.
type Lab struct {
	t      testing.TB
	prefix string // "anl<pid>_<start>_<rand>-"

	mu         sync.Mutex
	closed     bool
	namespaces []string // every namespace we created, in creation order
	procs      []*Proc
	routers    []*Router
	backbone   string // backbone bridge namespace, "" until a second router exists
	nextLAN    int    // last public LAN number handed out (198.18.N.0/24)
	nextPriv   int    // last private LAN number handed out (198.19.N.0/24)
	usedNames  map[string]bool
}

// Router is a namespace with IPv4 forwarding on that connects its hosts' LANs
// and, when the lab has several routers, the backbone.
type Router struct {
	Name     string
	NS       string
	Backbone netip.Addr // address on the backbone (valid once a second router exists)

	lab  *Lab
	idx  int
	lans []netip.Prefix // LANs attached to this router
}

// Host is a namespace with one interface (eth0) on its own LAN and a default
// route through its gateway (a router, or a NAT).
type Host struct {
	Name    string
	NS      string
	Addr    netip.Addr   // its address on its LAN
	LAN     netip.Prefix // its LAN
	Gateway netip.Addr   // its default gateway on the LAN
	// PublicAddr is the address other lab hosts see its connections come
	// from: Addr, or the NAT's WAN address for a host behind a NAT.
	PublicAddr netip.Addr
	NAT        *NAT // nil unless the host sits behind a NAT

	lab *Lab
}

// NATKind selects how a NAT namespace translates and filters.
type NATKind int

const (
	// NATCone masquerades (iptables MASQUERADE): one mapping per inside
	// address and port, source ports kept when free.
	NATCone NATKind = iota
	// NATSymmetric masquerades with --random-fully: a new random public port
	// for every new flow, even from the same inside port.
	NATSymmetric
	// NATNoUDP masquerades TCP but drops all forwarded UDP (a UDP-hostile
	// network; only TCP gets out).
	NATNoUDP
)

func (k NATKind) String() string {
	switch k {
	case NATCone:
		return "cone"
	case NATSymmetric:
		return "symmetric"
	case NATNoUDP:
		return "no-udp"
	}
	return "NATKind(" + strconv.Itoa(int(k)) + ")"
}

// NAT is the namespace between a NAT host and its router.
type NAT struct {
	NS   string
	Kind NATKind
	WAN  netip.Addr   // its address on the router's LAN: the host's public address
	LAN  netip.Prefix // the private LAN behind it

	lab       *Lab
	hosts     int    // hosts on the private LAN (guarded by lab.mu)
	rebinds   int    // Rebind calls (guarded by lab.mu)
	portRange string // UDP MASQUERADE --to-ports after Rebind (guarded by lab.mu)
}

// New creates an empty lab and registers Close with t.Cleanup. It first
// removes stale labs left by dead processes. It skips the test (fails it
// with NETLAB_REQUIRE=1) unless running as root with `ip` and `iptables` on
// PATH and `ip netns add` working.
func New(t testing.TB) *Lab {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		msg := "netlab: " + fmt.Sprintf(format, args...)
		if os.Getenv("NETLAB_REQUIRE") == "1" {
			t.Fatal(msg + " (NETLAB_REQUIRE=1)")
		}
		t.Skip(msg)
	}
	if err := supported(); err != nil {
		skip("%v", err)
	}
	if os.Geteuid() != 0 {
		skip("network-namespace lab needs root (euid %d)", os.Geteuid())
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("network-namespace lab needs %q on PATH", tool)
		}
	}
	start, err := procStart(os.Getpid())
	if err != nil {
		skip("cannot read own process start time: %v", err)
	}
	var rb [2]byte
	_, _ = rand.Read(rb[:])
	l := &Lab{
		t:         t,
		prefix:    fmt.Sprintf("%s%d_%d_%s-", NamePrefix, os.Getpid(), start, hex.EncodeToString(rb[:])),
		usedNames: map[string]bool{},
	}
	if n, err := RemoveStale(); err != nil {
		t.Logf("netlab: removing stale labs: %v", err)
	} else if n > 0 {
		t.Logf("netlab: removed %d stale namespace(s) of dead test processes", n)
	}
	// Probe: can we create a namespace at all (root in a container without
	// CAP_SYS_ADMIN, read-only /run, ...)?
	probe := l.prefix + "probe"
	if out, err := command("ip", "netns", "add", probe); err != nil {
		skip("`ip netns add` does not work here: %v: %s", err, out)
	}
	if out, err := command("ip", "netns", "del", probe); err != nil {
		t.Fatalf("netlab: ip netns del %s: %v: %s", probe, err, out)
	}
	t.Cleanup(l.Close)
	return l
}

// Prefix is the name prefix of all of this lab's namespaces.
func (l *Lab) Prefix() string { return l.prefix }

// Namespaces lists the namespaces the lab has created (and not yet removed).
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.namespaces...)
}

// AddRouter creates a router namespace with ip_forward=1 (inside it only).
// When the lab has more than one router they are joined by a backbone bridge
// (its own namespace) and every router gets routes to every other router's
// LANs.
func (l *Lab) AddRouter(name string) *Router {
	l.t.Helper()
	ns := l.newNS(name)
	l.sysctl(ns, "net/ipv4/ip_forward", "1")
	l.mu.Lock()
	r := &Router{Name: name, NS: ns, lab: l, idx: len(l.routers)}
	l.routers = append(l.routers, r)
	n := len(l.routers)
	l.mu.Unlock()
	switch {
	case n == 2:
		l.backbone = l.newNS("backbone")
		l.ip(l.backbone, "link", "add", "br0", "type", "bridge")
		l.ip(l.backbone, "link", "set", "br0", "up")
		for _, rr := range l.routers {
			l.joinBackbone(rr)
		}
	case n > 2:
		l.joinBackbone(r)
	}
	return r
}

// joinBackbone plugs r into the backbone bridge and exchanges routes with
// the routers already on it.
func (l *Lab) joinBackbone(r *Router) {
	l.t.Helper()
	if r.idx > 250 {
		l.t.Fatalf("netlab: too many routers")
	}
	r.Backbone = netip.AddrFrom4([4]byte{198, 18, 0, byte(r.idx + 1)})
	port := fmt.Sprintf("r%d", r.idx)
	l.ip(l.backbone, "link", "add", port, "type", "veth", "peer", "name", "bb0", "netns", r.NS)
	l.ip(l.backbone, "link", "set", port, "master", "br0")
	l.ip(l.backbone, "link", "set", port, "up")
	l.ip(r.NS, "addr", "add", r.Backbone.String()+"/24", "dev", "bb0")
	l.ip(r.NS, "link", "set", "bb0", "up")
	for _, o := range l.routers {
		if o == r || !o.Backbone.IsValid() {
			continue
		}
		for _, p := range o.lans {
			l.ip(r.NS, "route", "add", p.String(), "via", o.Backbone.String())
		}
		for _, p := range r.lans {
			l.ip(o.NS, "route", "add", p.String(), "via", r.Backbone.String())
		}
	}
}

// addLAN connects namespace ns to router r over a veth pair on the next free
// public /24: router side "h<N>" at .1, ns side ifname at .2. Other routers
// get a route to it.
func (r *Router) addLAN(ns, ifname string) (addr, gw netip.Addr, lan netip.Prefix) {
	l := r.lab
	l.t.Helper()
	l.mu.Lock()
	l.nextLAN++
	n := l.nextLAN
	l.mu.Unlock()
	if n > 255 {
		l.t.Fatalf("netlab: out of public LANs")
	}
	lan = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(n), 0}), 24)
	gw = netip.AddrFrom4([4]byte{198, 18, byte(n), 1})
	addr = netip.AddrFrom4([4]byte{198, 18, byte(n), 2})
	rif := fmt.Sprintf("h%d", n)
	l.ip(r.NS, "link", "add", rif, "type", "veth", "peer", "name", ifname, "netns", ns)
	l.ip(r.NS, "addr", "add", gw.String()+"/24", "dev", rif)
	l.ip(r.NS, "link", "set", rif, "up")
	l.ip(ns, "addr", "add", addr.String()+"/24", "dev", ifname)
	l.ip(ns, "link", "set", ifname, "up")
	l.ip(ns, "route", "add", "default", "via", gw.String())
	r.lans = append(r.lans, lan)
	for _, o := range l.routers {
		if o != r && o.Backbone.IsValid() && r.Backbone.IsValid() {
			l.ip(o.NS, "route", "add", lan.String(), "via", r.Backbone.String())
		}
	}
	return addr, gw, lan
}

// AddHost creates a host namespace with loopback up, joined by a veth pair
// (eth0) to router r on its own /24, default route via the router.
func (r *Router) AddHost(name string) *Host {
	r.lab.t.Helper()
	ns := r.lab.newNS(name)
	addr, gw, lan := r.addLAN(ns, "eth0")
	return &Host{Name: name, NS: ns, Addr: addr, LAN: lan, Gateway: gw, PublicAddr: addr, lab: r.lab}
}

// AddNATHost creates a host behind a NAT namespace of the given kind: the NAT
// ("<name>-nat") sits on its own public LAN of router r (interface wan0) and
// serves a private 198.19.N.0/24 (bridge lan0, NAT at .1) on which the host
// is .2; NAT.AddHost puts more hosts on the same private LAN. The private LAN
// is not routed anywhere else: its hosts reach the rest of the lab only
// through the NAT's translation.
func (r *Router) AddNATHost(name string, kind NATKind) *Host {
	l := r.lab
	l.t.Helper()
	switch kind {
	case NATCone, NATSymmetric, NATNoUDP:
	default:
		l.t.Fatalf("netlab: unknown NAT kind %v", kind)
	}
	natNS := l.newNS(name + "-nat")
	l.sysctl(natNS, "net/ipv4/ip_forward", "1")
	wan, _, _ := r.addLAN(natNS, "wan0")

	l.mu.Lock()
	l.nextPriv++
	n := l.nextPriv
	l.mu.Unlock()
	if n > 255 {
		l.t.Fatalf("netlab: out of private LANs")
	}
	lan := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(n), 0}), 24)
	gw := netip.AddrFrom4([4]byte{198, 19, byte(n), 1})
	l.ip(natNS, "link", "add", "lan0", "type", "bridge")
	l.ip(natNS, "addr", "add", gw.String()+"/24", "dev", "lan0")
	l.ip(natNS, "link", "set", "lan0", "up")

	nat := &NAT{NS: natNS, Kind: kind, WAN: wan, LAN: lan, lab: l}
	l.iptables(natNS, nat.masqRule("-A")...)
	if kind == NATNoUDP {
		l.iptables(natNS, "-A", "FORWARD", "-p", "udp", "-j", "DROP")
	}
	return nat.AddHost(name)
}

// masqRule is the NAT's MASQUERADE rule for iptables op (-A, -D).
func (n *NAT) masqRule(op string) []string {
	rule := []string{"-t", "nat", op, "POSTROUTING", "-s", n.LAN.String(), "-o", "wan0", "-j", "MASQUERADE"}
	if n.Kind == NATSymmetric {
		rule = append(rule, "--random-fully")
	}
	return rule
}

// rebindRule is the UDP MASQUERADE rule with a port range that Rebind puts
// in front of masqRule.
func (n *NAT) rebindRule(op, portRange string) []string {
	rule := []string{"-t", "nat", op, "POSTROUTING"}
	if op == "-I" {
		rule = append(rule, "1")
	}
	rule = append(rule, "-p", "udp", "-s", n.LAN.String(), "-o", "wan0", "-j", "MASQUERADE", "--to-ports", portRange)
	if n.Kind == NATSymmetric {
		rule = append(rule, "--random-fully")
	}
	return rule
}

// AddHost adds a host to the NAT's private LAN (.2, .3, ...), default route
// via the NAT.
func (n *NAT) AddHost(name string) *Host {
	l := n.lab
	l.t.Helper()
	l.mu.Lock()
	n.hosts++
	k := n.hosts
	l.mu.Unlock()
	if k > 250 {
		l.t.Fatalf("netlab: too many hosts behind NAT %s", n.NS)
	}
	hostNS := l.newNS(name)
	b := n.LAN.Addr().As4()
	addr := netip.AddrFrom4([4]byte{b[0], b[1], b[2], byte(k + 1)})
	gw := netip.AddrFrom4([4]byte{b[0], b[1], b[2], 1})
	port := fmt.Sprintf("vh%d", k)
	l.ip(n.NS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", hostNS)
	l.ip(n.NS, "link", "set", port, "master", "lan0")
	l.ip(n.NS, "link", "set", port, "up")
	l.ip(hostNS, "addr", "add", addr.String()+"/24", "dev", "eth0")
	l.ip(hostNS, "link", "set", "eth0", "up")
	l.ip(hostNS, "route", "add", "default", "via", gw.String())
	return &Host{Name: name, NS: hostNS, Addr: addr, LAN: n.LAN, Gateway: gw, PublicAddr: n.WAN, NAT: n, lab: l}
}

// InputFirewall makes the NAT behave like a home router's default firewall:
// UDP arriving on the WAN that starts a new flow (nobody inside sent to its
// source first) is dropped before it reaches the router's own stack.
func (n *NAT) InputFirewall() {
	n.lab.t.Helper()
	n.lab.iptables(n.NS, "-A", "INPUT", "-i", "wan0", "-p", "udp", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
}

// BlockUDP drops forwarded UDP between the NAT's LAN and peer (both
// directions) until the returned function is called.
func (n *NAT) BlockUDP(peer netip.Addr) (unblock func()) {
	l := n.lab
	l.t.Helper()
	rules := [][]string{
		{"FORWARD", "-p", "udp", "-d", peer.String(), "-j", "DROP"},
		{"FORWARD", "-p", "udp", "-s", peer.String(), "-j", "DROP"},
	}
	for _, r := range rules {
		l.iptables(n.NS, append([]string{"-I"}, r...)...)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, r := range rules {
				l.iptables(n.NS, append([]string{"-D"}, r...)...)
			}
		})
	}
}

// Rebind simulates a NAT losing its state (a reboot, a CGNAT timeout): every
// conntrack entry is flushed and new flows get public ports from a different
// range (20000-24999, then 25000-29999, ...), so existing mappings change.
func (n *NAT) Rebind() {
	l := n.lab
	l.t.Helper()
	l.mu.Lock()
	old := n.portRange
	n.rebinds++
	lo := 20000 + 5000*((n.rebinds-1)%2)
	n.portRange = fmt.Sprintf("%d-%d", lo, lo+4999)
	l.mu.Unlock()
	if old != "" {
		l.iptables(n.NS, n.rebindRule("-D", old)...)
	}
	l.iptables(n.NS, n.rebindRule("-I", n.portRange)...)
	if out, err := command("ip", "netns", "exec", n.NS, "conntrack", "-F"); err != nil {
		l.t.Fatalf("netlab: conntrack -F in %s: %v: %s (CI installs the conntrack package)", n.NS, err, out)
	}
}

// newNS creates namespace prefix+name with loopback up and records it for
// cleanup.
func (l *Lab) newNS(name string) string {
	l.t.Helper()
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		l.t.Fatalf("netlab: bad name %q", name)
	}
	ns := l.prefix + name
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.t.Fatalf("netlab: lab already closed")
	}
	if l.usedNames[name] {
		l.mu.Unlock()
		l.t.Fatalf("netlab: name %q used twice", name)
	}
	l.usedNames[name] = true
	l.mu.Unlock()
	if out, err := command("ip", "netns", "add", ns); err != nil {
		l.t.Fatalf("netlab: ip netns add %s: %v: %s", ns, err, out)
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
	l.ip(ns, "link", "set", "lo", "up")
	return ns
}

// ip runs `ip -n NS args...` and fails the test on error.
func (l *Lab) ip(ns string, args ...string) {
	l.t.Helper()
	full := append([]string{"-n", ns}, args...)
	if out, err := command("ip", full...); err != nil {
		l.t.Fatalf("netlab: ip %s: %v: %s", strings.Join(full, " "), err, out)
	}
}

// iptables runs iptables inside ns and fails the test on error.
func (l *Lab) iptables(ns string, args ...string) {
	l.t.Helper()
	full := append([]string{"netns", "exec", ns, "iptables", "-w", "5"}, args...)
	if out, err := command("ip", full...); err != nil {
		l.t.Fatalf("netlab: ip %s: %v: %s", strings.Join(full, " "), err, out)
	}
}

// sysctl writes /proc/sys/KEY inside ns (never in the host namespace).
func (l *Lab) sysctl(ns, key, value string) {
	l.t.Helper()
	if strings.ContainsAny(key+value, "'\"$`\\ ;") {
		l.t.Fatalf("netlab: bad sysctl %q=%q", key, value)
	}
	script := fmt.Sprintf("echo %s > /proc/sys/%s", value, key)
	if out, err := command("ip", "netns", "exec", ns, "sh", "-c", script); err != nil {
		l.t.Fatalf("netlab: sysctl %s=%s in %s: %v: %s", key, value, ns, err, out)
	}
}

// Close stops every process the lab started, kills anything else still
// running in its namespaces, deletes the namespaces (their veths go with
// them) and removes their /etc/netns dirs. It is idempotent and registered
// with t.Cleanup by New; errors are logged, not fatal.
func (l *Lab) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	procs := l.procs
	nss := l.namespaces
	l.namespaces = nil
	l.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Stop() }()
	}
	wg.Wait()
	for i := len(nss) - 1; i >= 0; i-- {
		if err := removeNS(nss[i]); err != nil {
			l.t.Logf("netlab: cleanup: %v", err)
		}
	}
	_ = os.Remove(etcNetns) // only if empty
}

// removeNS kills every process left in ns, deletes it and its /etc/netns dir.
func removeNS(ns string) error {
	var errs []error
	if out, err := command("ip", "netns", "pids", ns); err == nil {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = killPID(pid)
			}
		}
	}
	if out, err := command("ip", "netns", "del", ns); err != nil && !strings.Contains(out, "No such file") {
		errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", ns, err, out))
	}
	if err := os.RemoveAll(filepath.Join(etcNetns, ns)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RemoveStale deletes lab namespaces and /etc/netns dirs whose owning process
// (pid and start time encoded in the name) no longer exists, killing any
// process still inside them. It returns how many namespaces it removed. New
// calls it; labs of live processes are left alone.
func RemoveStale() (int, error) {
	out, err := command("ip", "netns", "list")
	if err != nil {
		return 0, fmt.Errorf("ip netns list: %v: %s", err, out)
	}
	var errs []error
	n := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !isStale(f[0]) {
			continue
		}
		if err := removeNS(f[0]); err != nil {
			errs = append(errs, err)
		} else {
			n++
		}
	}
	if ents, err := os.ReadDir(etcNetns); err == nil {
		for _, e := range ents {
			if isStale(e.Name()) {
				if err := os.RemoveAll(filepath.Join(etcNetns, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	removeStaleBuildDirs()
	return n, errors.Join(errs...)
}

// isStale reports whether name is a lab namespace whose owner is gone.
func isStale(name string) bool {
	m := nsNameRE.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, err1 := strconv.Atoi(m[1])
	start, err2 := strconv.ParseUint(m[2], 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	return !processAlive(pid, start)
}

// processAlive reports whether pid exists and started at start (clock ticks
// since boot), so a recycled pid does not keep a stale lab alive.
func processAlive(pid int, start uint64) bool {
	got, err := procStart(pid)
	return err == nil && got == start
}

// procStart reads the start time (field 22 of /proc/PID/stat).
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may contain spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 = 3rd..: state is field 3 = f[0]
}

// command runs a short setup command (no namespace switch of its own) and
// returns its combined output.
func command(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
