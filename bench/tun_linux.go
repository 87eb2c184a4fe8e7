//go:build linux

package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// The kernel TUN setups: two network namespaces joined by a veth pair
// (198.18.77.1 and .2), the coordinator as a process in the first, an
// agentnet node in kernel TUN mode in each. "veth" is plain TCP over the
// veth pair, the ceiling for "agentnet-tun", which is TCP between the two
// nodes' virtual IPs through their TUN devices and WireGuard. The measuring
// sockets are opened inside the namespaces by this process.

// errNeedsRoot marks a setup that cannot run unprivileged.
var errNeedsRoot = errors.New("needs root and iproute2 (network namespaces, TUN devices)")

// tunLab owns everything the TUN setups create.
type tunLab struct {
	nsA, nsB string
	hA, hB   netns.NsHandle
	dir      string
	procs    []*exec.Cmd
	ipB      netip.Addr // node B's overlay IPv4
	closed   bool
}

var tunUpRE = regexp.MustCompile(`^node (\S+) up: (\S+) `)

// tunSupported reports errNeedsRoot unless the TUN setups can run here.
func tunSupported() error {
	if os.Geteuid() != 0 {
		return errNeedsRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errNeedsRoot
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return errNeedsRoot
	}
	return nil
}

func newTUNLab(ctx context.Context, o Options, bin string) (tl *tunLab, err error) {
	if err := tunSupported(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "agentnet-bench-tun-")
	if err != nil {
		return nil, err
	}
	tl = &tunLab{dir: dir, nsA: fmt.Sprintf("anbench%d-a", os.Getpid()), nsB: fmt.Sprintf("anbench%d-b", os.Getpid()), hA: -1, hB: -1}
	defer func() {
		if err != nil {
			tl.close()
		}
	}()
	steps := [][]string{
		{"netns", "add", tl.nsA},
		{"netns", "add", tl.nsB},
		{"-n", tl.nsA, "link", "set", "lo", "up"},
		{"-n", tl.nsB, "link", "set", "lo", "up"},
		{"-n", tl.nsA, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", tl.nsB},
		{"-n", tl.nsA, "addr", "add", "198.18.77.1/24", "dev", "veth0"},
		{"-n", tl.nsB, "addr", "add", "198.18.77.2/24", "dev", "veth0"},
		{"-n", tl.nsA, "link", "set", "veth0", "up"},
		{"-n", tl.nsB, "link", "set", "veth0", "up"},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			return tl, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	if tl.hA, err = netns.GetFromName(tl.nsA); err != nil {
		return tl, err
	}
	if tl.hB, err = netns.GetFromName(tl.nsB); err != nil {
		return tl, err
	}

	coordData := filepath.Join(dir, "coord")
	if _, err := tl.start(ctx, tl.nsA, bin, "coordinator", "--listen", "198.18.77.1:8443", "--data", coordData, "--log-level", "warn"); err != nil {
		return tl, err
	}
	var token string
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", tl.nsA, bin, "token", "create",
			"--admin", filepath.Join(coordData, "admin.cred"), "--reusable", "--ttl", "1h").Output()
		if err == nil {
			token = strings.TrimSpace(string(out))
			break
		}
		if time.Now().After(deadline) {
			return tl, fmt.Errorf("coordinator in %s not answering: token create: %v", tl.nsA, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	o.Progressf("dataplane tun: coordinator up in %s, starting two TUN-mode nodes", tl.nsA)
	var ips [2]netip.Addr
	for i, ns := range []string{tl.nsA, tl.nsB} {
		name := fmt.Sprintf("tun%c", 'a'+i)
		line, err := tl.start(ctx, ns, bin, "node", "--token", token, "--name", name, "--state", filepath.Join(dir, name),
			"--listen", fmt.Sprintf("198.18.77.%d:41641", i+1), "--tun", "agentnet0", "--log-level", "warn")
		if err != nil {
			return tl, err
		}
		if ips[i], err = netip.ParseAddr(line[2]); err != nil {
			return tl, fmt.Errorf("node %s: bad address in %q", name, line[0])
		}
	}
	tl.ipB = ips[1]
	return tl, nil
}

// start runs bin args... inside ns. With waitUp, it returns the node's "up"
// line once printed; otherwise it returns at once.
func (tl *tunLab) start(ctx context.Context, ns, bin string, args ...string) ([]string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	tl.procs = append(tl.procs, cmd) // `ip netns exec` execs bin: cmd's pid is bin's
	up := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := tunUpRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case up <- m:
				default:
				}
			}
		}
	}()
	if args[0] != "node" {
		return nil, nil
	}
	select {
	case m := <-up:
		return m, nil
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("%s %s in %s: not up within 30s", filepath.Base(bin), args[0], ns)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// inNS runs f on a thread switched into namespace h; sockets f creates stay
// in h. If the thread cannot be switched back it is not returned to the
// scheduler (it exits with the goroutine).
func inNS(h netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := netns.Set(orig); err == nil {
		runtime.UnlockOSThread()
	}
	return ferr
}

// setup returns a data-plane setup from namespace A to B's address dst.
func (tl *tunLab) setup(ctx context.Context, name string, dst netip.Addr) (*setup, error) {
	var ln net.Listener
	target := netip.AddrPortFrom(dst, benchPort).String()
	if err := inNS(tl.hB, func() (err error) { ln, err = net.Listen("tcp", target); return err }); err != nil {
		return nil, fmt.Errorf("%s: listen in %s: %w", name, tl.nsB, err)
	}
	var d net.Dialer
	dial := func(ctx context.Context) (c net.Conn, err error) {
		err = inNS(tl.hA, func() error { c, err = d.DialContext(ctx, "tcp", target); return err })
		return c, err
	}
	s := &setup{name: name, target: target, ln: ln, dial: dial, close: func() { ln.Close() }, cpu: tl.cpuSeconds}
	// Wait until the path works (the WireGuard handshake for agentnet-tun).
	go dpServe(ln)
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := echoOnce(ctx, s)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			ln.Close()
			return nil, fmt.Errorf("%s: no round trip within 20s: %w", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s, nil
}

// cpuSeconds is this process's CPU time plus the node and coordinator
// processes'.
func (tl *tunLab) cpuSeconds() float64 {
	total := cpuSeconds()
	for _, c := range tl.procs {
		if c.Process == nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 12 {
			ut, _ := strconv.ParseFloat(f[11], 64) // field 14 utime
			st, _ := strconv.ParseFloat(f[12], 64) // field 15 stime
			total += (ut + st) / 100               // USER_HZ
		}
	}
	return total
}

func (tl *tunLab) close() {
	if tl.closed {
		return
	}
	tl.closed = true
	for _, c := range tl.procs {
		if c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, c := range tl.procs {
		if c.Process == nil {
			continue
		}
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
	for _, h := range []netns.NsHandle{tl.hA, tl.hB} {
		if h >= 0 {
			h.Close()
		}
	}
	for _, ns := range []string{tl.nsA, tl.nsB} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	os.RemoveAll(tl.dir)
}
