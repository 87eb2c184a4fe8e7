package netlab

import (
	"context"
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

// startEcho starts the echo server on h (TCP and UDP on port) and waits for it.
func startEcho(t *testing.T, echo string, h *Host, port int) *Proc {
	t.Helper()
	addr := fmt.Sprintf("%s:%d", h.Addr, port)
	p := h.Start(t, echo, "serve", "-tcp", addr, "-udp", addr)
	for _, proto := range []string{"tcp", "udp"} {
		if _, err := p.WaitLine(regexp.MustCompile(`^listening `+proto+` `), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

var seenRE = regexp.MustCompile(`seen (\S+)`)

// seen parses the echo client's "ADDR seen REMOTE" lines into the REMOTEs.
func seen(t *testing.T, out string) []netip.AddrPort {
	t.Helper()
	var aps []netip.AddrPort
	for _, m := range seenRE.FindAllStringSubmatch(out, -1) {
		ap, err := netip.ParseAddrPort(m[1])
		if err != nil {
			t.Fatalf("bad echo output %q: %v", out, err)
		}
		aps = append(aps, ap)
	}
	if len(aps) == 0 {
		t.Fatalf("no 'seen' in echo output %q", out)
	}
	return aps
}

// TestTwoHostsOneRouter: hosts on two LANs of one router reach each other
// over TCP and UDP and see each other's real lab addresses.
func TestTwoHostsOneRouter(t *testing.T) {
	t.Parallel()
	l := New(t)
	echo := BuildEcho(t)
	r := l.AddRouter("r1")
	a, b := r.AddHost("a"), r.AddHost("b")
	if a.LAN == b.LAN || !a.LAN.Contains(a.Addr) || a.Gateway != netip.MustParseAddr("198.18.1.1") {
		t.Fatalf("unexpected addressing: a %v %v gw %v, b %v %v", a.Addr, a.LAN, a.Gateway, b.Addr, b.LAN)
	}
	startEcho(t, echo, b, 7000)
	for _, udp := range []bool{false, true} {
		args := []string{"dial", "-timeout", "3s"}
		if udp {
			args = append(args, "-udp")
		}
		out := a.Run(t, echo, append(args, fmt.Sprintf("%s:7000", b.Addr))...)
		if got := seen(t, out)[0].Addr(); got != a.Addr {
			t.Errorf("udp=%v: b saw %v, want a's address %v", udp, got, a.Addr)
		}
	}
	// The lab is really isolated: a cannot reach the world, and the host
	// namespace has no route to lab addresses.
	if _, _, err := a.Output(context.Background(), echo, "dial", "-timeout", "1s", "198.19.255.2:7000"); err == nil {
		t.Error("dial to an unrouted address succeeded")
	}
}

// TestTwoRouters: hosts on different routers reach each other across the
// backbone, including routers and hosts added after the backbone exists.
func TestTwoRouters(t *testing.T) {
	t.Parallel()
	l := New(t)
	echo := BuildEcho(t)
	r1, r2 := l.AddRouter("r1"), l.AddRouter("r2")
	a := r1.AddHost("a")
	b := r2.AddHost("b")
	r3 := l.AddRouter("r3")
	c := r3.AddHost("c")
	startEcho(t, echo, b, 7000)
	startEcho(t, echo, c, 7000)
	out := a.Run(t, echo, "dial", fmt.Sprintf("%s:7000", b.Addr), fmt.Sprintf("%s:7000", c.Addr))
	for _, ap := range seen(t, out) {
		if ap.Addr() != a.Addr {
			t.Errorf("saw %v, want %v", ap.Addr(), a.Addr)
		}
	}
	out = c.Run(t, echo, "dial", "-udp", fmt.Sprintf("%s:7000", b.Addr))
	if got := seen(t, out)[0].Addr(); got != c.Addr {
		t.Errorf("b saw %v, want %v", got, c.Addr)
	}
}

// TestNAT: behind a cone NAT TCP and UDP reach a public host, which sees the
// NAT's address and, for UDP from one socket, the same port for two
// destinations; behind a symmetric NAT the ports differ; behind the no-UDP
// NAT UDP fails and TCP works.
func TestNAT(t *testing.T) {
	t.Parallel()
	l := New(t)
	echo := BuildEcho(t)
	r := l.AddRouter("r")
	pub := r.AddHost("pub")
	pub2 := r.AddHost("pub2")
	startEcho(t, echo, pub, 7000)
	startEcho(t, echo, pub2, 7000)
	dsts := []string{fmt.Sprintf("%s:7000", pub.Addr), fmt.Sprintf("%s:7000", pub2.Addr)}

	cone := r.AddNATHost("cone", NATCone)
	sym := r.AddNATHost("sym", NATSymmetric)
	noudp := r.AddNATHost("noudp", NATNoUDP)
	for _, h := range []*Host{cone, sym, noudp} {
		if h.NAT == nil || h.PublicAddr != h.NAT.WAN || h.PublicAddr == h.Addr || !strings.HasPrefix(h.Addr.String(), "198.19.") {
			t.Fatalf("%s: bad NAT host %+v", h.Name, h)
		}
		out := h.Run(t, echo, append([]string{"dial"}, dsts...)...)
		for _, ap := range seen(t, out) {
			if ap.Addr() != h.PublicAddr {
				t.Errorf("%s: tcp seen from %v, want NAT address %v", h.Name, ap.Addr(), h.PublicAddr)
			}
		}
	}

	udpArgs := append([]string{"dial", "-udp", "-lport", "40000", "-timeout", "3s"}, dsts...)
	for _, h := range []*Host{cone, sym} {
		aps := seen(t, h.Run(t, echo, udpArgs...))
		if len(aps) != 2 || aps[0].Addr() != h.PublicAddr || aps[1].Addr() != h.PublicAddr {
			t.Fatalf("%s: udp seen %v, want 2x %v", h.Name, aps, h.PublicAddr)
		}
		same := aps[0].Port() == aps[1].Port()
		switch h.NAT.Kind {
		case NATCone:
			if !same || aps[0].Port() != 40000 {
				t.Errorf("cone NAT: mapped ports %v, want 40000 for both destinations", aps)
			}
		case NATSymmetric:
			if same {
				t.Errorf("symmetric NAT: same mapped port %d for two destinations", aps[0].Port())
			}
		}
		t.Logf("%s NAT: udp from %s:40000 seen as %v", h.NAT.Kind, h.Addr, aps)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	so, se, err := noudp.Output(ctx, echo, "dial", "-udp", "-timeout", "1500ms", dsts[0])
	if err == nil {
		t.Errorf("no-UDP NAT: UDP got through: %s", so)
	} else if !strings.Contains(se, "no answer") {
		t.Errorf("no-UDP NAT: unexpected failure %v: %s", err, se)
	}
}

// TestCloseRemovesEverything: after Close no namespace, process or
// /etc/netns dir of the lab remains, and the host namespace's forwarding is
// untouched.
func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	fwdBefore, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	l := New(t)
	r := l.AddRouter("r")
	h := r.AddHost("h")
	r.AddNATHost("n", NATCone)
	h.WriteResolvConf(t, "198.18.1.1")
	if out := h.Run(t, "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 198.18.1.1") {
		t.Fatalf("resolv.conf in namespace: %q", out)
	}
	p := h.Start(t, "sleep", "300")
	pid := p.PID()
	if n := len(l.Namespaces()); n != 4 { // r, h, n-nat, n
		t.Fatalf("%d namespaces, want 4: %v", n, l.Namespaces())
	}
	l.Close()
	l.Close() // idempotent

	select {
	case <-p.Done():
	default:
		t.Errorf("process %d still running after Close", pid)
	}
	if left := listNS(t, l.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	if _, err := os.Stat(filepath.Join(etcNetns, h.NS)); !os.IsNotExist(err) {
		t.Errorf("/etc/netns/%s left after Close (%v)", h.NS, err)
	}
	if fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(fwd) != string(fwdBefore) {
		t.Errorf("host ip_forward changed: %q -> %q", fwdBefore, fwd)
	}
}

// TestRemovesStaleLab: a lab left by a crashed test process (dead owner
// pid) is removed by the next New, including a process still running in it
// and its /etc/netns dir; a lab of a live process is left alone.
func TestRemovesStaleLab(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	live := New(t) // a concurrent live lab must survive
	liveRouter := live.AddRouter("live")

	// Simulate a crash: a process that owned a lab and died without cleanup.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d_%d_dead-stale", NamePrefix, dead.Process.Pid, 1)
	if out, err := command("ip", "netns", "add", stale); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = removeNS(stale) }) // in case the test fails
	if err := os.MkdirAll(filepath.Join(etcNetns, stale), 0o755); err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command("ip", "netns", "exec", stale, "sleep", "300")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	orphanDone := make(chan struct{})
	go func() { _ = orphan.Wait(); close(orphanDone) }()
	t.Cleanup(func() {
		select {
		case <-orphanDone:
		default:
			_ = orphan.Process.Kill()
			<-orphanDone
		}
	})
	if len(listNS(t, stale)) != 1 {
		t.Fatalf("could not create stale namespace %s", stale)
	}

	New(t) // removes the stale lab
	if left := listNS(t, stale); len(left) > 0 {
		t.Errorf("stale namespace survived New: %v", left)
	}
	if _, err := os.Stat(filepath.Join(etcNetns, stale)); !os.IsNotExist(err) {
		t.Errorf("stale /etc/netns dir survived New (%v)", err)
	}
	select {
	case <-orphanDone:
	case <-time.After(5 * time.Second):
		t.Errorf("process in the stale namespace survived New")
	}
	if len(listNS(t, liveRouter.NS)) != 1 {
		t.Errorf("live lab namespace %s was removed", liveRouter.NS)
	}
}

// listNS returns the namespaces whose names start with prefix.
func listNS(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := command("ip", "netns", "list")
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var found []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			found = append(found, f[0])
		}
	}
	return found
}

// TestNATLANFirewallBlockRebind: two hosts share one NAT's private LAN and
// reach each other directly; the input firewall drops unsolicited UDP at the
// WAN; BlockUDP cuts UDP to one peer until unblocked; Rebind moves new
// flows to another public port range.
func TestNATLANFirewallBlockRebind(t *testing.T) {
	t.Parallel()
	l := New(t)
	echo := BuildEcho(t)
	r := l.AddRouter("r")
	pub := r.AddHost("pub")
	startEcho(t, echo, pub, 7000)
	dst := fmt.Sprintf("%s:7000", pub.Addr)

	h1 := r.AddNATHost("h1", NATCone)
	h2 := h1.NAT.AddHost("h2")
	if h2.LAN != h1.LAN || h2.Addr == h1.Addr || h2.PublicAddr != h1.PublicAddr {
		t.Fatalf("second host on the NAT LAN: %+v vs %+v", h2, h1)
	}
	startEcho(t, echo, h2, 7001)
	aps := seen(t, h1.Run(t, echo, "dial", "-udp", "-timeout", "3s", fmt.Sprintf("%s:7001", h2.Addr)))
	if len(aps) != 1 || aps[0].Addr() != h1.Addr {
		t.Fatalf("h1 -> h2 on the NAT LAN seen as %v, want from %v (no translation on the LAN)", aps, h1.Addr)
	}

	// Input firewall: an unsolicited datagram to the WAN is dropped in
	// INPUT, so no conntrack entry is confirmed for it.
	h1.NAT.InputFirewall()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, _ = pub.Output(ctx, echo, "dial", "-udp", "-timeout", "500ms", fmt.Sprintf("%s:41000", h1.PublicAddr))
	if out := h1.NAT.Run(t, "iptables", "-w", "5", "-L", "INPUT", "-v", "-n", "-x"); !strings.Contains(out, "DROP") {
		t.Fatalf("input firewall rule missing:\n%s", out)
	}
	if out := h1.NAT.Run(t, "conntrack", "-L", "-p", "udp", "--dport", "41000"); strings.Contains(out, "dport=41000") {
		t.Errorf("a dropped unsolicited datagram left a conntrack entry:\n%s", out)
	}

	unblock := h1.NAT.BlockUDP(pub.Addr)
	so, _, err := h1.Output(ctx, echo, "dial", "-udp", "-timeout", "1s", dst)
	if err == nil {
		t.Fatalf("UDP to a blocked peer got through: %s", so)
	}
	unblock()
	before := seen(t, h1.Run(t, echo, "dial", "-udp", "-lport", "40500", "-timeout", "3s", dst))

	h1.NAT.Rebind()
	after := seen(t, h1.Run(t, echo, "dial", "-udp", "-lport", "40500", "-timeout", "3s", dst))
	if len(before) != 1 || len(after) != 1 || before[0] == after[0] {
		t.Fatalf("mapping before rebind %v, after %v: want a change", before, after)
	}
	if p := after[0].Port(); p < 20000 || p > 24999 {
		t.Errorf("after Rebind the public port is %d, want 20000-24999", p)
	}
}
