//go:build linux

package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

const testName = "agentnet0"

var (
	testAddr4   = netip.MustParsePrefix("100.96.0.1/32")
	testAddr6   = netip.MustParsePrefix("fd7a:115c:a1e0::1/128")
	testRoute4  = netip.MustParsePrefix("100.96.0.0/12")
	testRoute6  = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
	testRouteDN = netip.MustParsePrefix("100.100.100.100/32")
)

// testConfig returns the config every test uses; log nil discards logs.
func testConfig(log *slog.Logger) Config {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Config{
		Name:   testName,
		MTU:    1380,
		Addrs:  []netip.Prefix{testAddr4, testAddr6},
		Routes: []netip.Prefix{testRoute4, testRoute6, testRouteDN, testAddr4},
		Logger: log,
	}
}

// inNetns skips unless the test can create TUN devices, then moves the test
// goroutine's locked OS thread into a fresh anonymous network namespace for
// the rest of the test and returns a netlink handle bound to it. Cleanup
// restores the thread's namespace; the anonymous one vanishes with its last
// reference, taking any device in it along, so nothing leaks into the host.
// It also checks, last of all, that no goroutine leaked.
func inNetns(t *testing.T) *netlink.Handle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: kernel TUN tests need root (CAP_NET_ADMIN) to create network namespaces and devices; run `go test` as root")
	}
	if _, err := os.Stat(cloneDevice); err != nil {
		t.Skipf("skipping: %s is missing (%v): load the tun module", cloneDevice, err)
	}
	t.Cleanup(func() { goleak.VerifyNone(t) })

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New() // unshare(CLONE_NEWNET) on this thread
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: Go terminates it with the goroutine,
			// so it never runs other code in the test namespace.
			t.Errorf("restore netns: %v", err)
			orig.Close()
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
	})
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// logBuffer is a concurrency-safe slog sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(b *logBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

func mustCreate(t *testing.T, cfg Config) *Device {
	t.Helper()
	d, err := Create(cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return d
}

func routeVia(t *testing.T, h *netlink.Handle, dst netip.Prefix) []netlink.Route {
	t.Helper()
	family := netlink.FAMILY_V4
	if dst.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := h.RouteListFiltered(family, &netlink.Route{Dst: ipNet(dst)}, netlink.RT_FILTER_DST)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("list routes to %s: %v", dst, err)
	}
	return routes
}

func linkAddrs(t *testing.T, h *netlink.Handle, link netlink.Link) map[netip.Prefix]netlink.Addr {
	t.Helper()
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("list addresses: %v", err)
	}
	m := make(map[netip.Prefix]netlink.Addr)
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		m[netip.PrefixFrom(ip.Unmap(), ones)] = a
	}
	return m
}

func requireGone(t *testing.T, h *netlink.Handle, name string) {
	t.Helper()
	if link, err := h.LinkByName(name); err == nil {
		t.Fatalf("device %q (index %d) still exists", name, link.Attrs().Index)
	}
	for _, dst := range []netip.Prefix{testRoute4, testRoute6, testRouteDN} {
		if rs := routeVia(t, h, dst); len(rs) != 0 {
			t.Errorf("route %s still present: %v", dst, rs)
		}
	}
}

func TestCreateConfiguresDevice(t *testing.T) {
	h := inNetns(t)
	var logs logBuffer
	d := mustCreate(t, testConfig(newLogger(&logs)))

	if d.Name() != testName {
		t.Errorf("Name() = %q, want %q", d.Name(), testName)
	}
	link, err := h.LinkByName(testName)
	if err != nil {
		t.Fatalf("device not found in namespace: %v", err)
	}
	attrs := link.Attrs()
	if link.Type() != "tuntap" || attrs.Alias != ownerAlias {
		t.Errorf("type %q alias %q, want tuntap/%q", link.Type(), attrs.Alias, ownerAlias)
	}
	if attrs.Flags&net.FlagUp == 0 {
		t.Errorf("device is not up: flags %v", attrs.Flags)
	}
	if attrs.MTU != 1380 {
		t.Errorf("MTU = %d, want 1380", attrs.MTU)
	}
	if mtu, err := d.TUN().MTU(); err != nil || mtu != 1380 {
		t.Errorf("TUN().MTU() = %d, %v; want 1380", mtu, err)
	}
	// vnet headers and offloads on: wireguard-go then batches up to
	// conn.IdealBatchSize packets per Read.
	if bs := d.TUN().BatchSize(); bs <= 1 {
		t.Errorf("TUN().BatchSize() = %d: virtio-net offloads were not negotiated", bs)
	}

	addrs := linkAddrs(t, h, link)
	for _, want := range []netip.Prefix{testAddr4, testAddr6} {
		a, ok := addrs[want]
		if !ok {
			t.Errorf("address %s missing; have %v", want, addrs)
			continue
		}
		if want.Addr().Is6() && (a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0) {
			t.Errorf("address %s flags %#x: want nodad and not tentative", want, a.Flags)
		}
	}
	for _, dst := range []netip.Prefix{testRoute4, testRoute6, testRouteDN} {
		rs := routeVia(t, h, dst)
		if len(rs) != 1 || rs[0].LinkIndex != attrs.Index {
			t.Errorf("route %s = %v, want one via index %d", dst, rs, attrs.Index)
		}
	}
	// Usable at once: the IPv6 address's local route is already installed.
	local, err := h.RouteListFiltered(netlink.FAMILY_V6,
		&netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: ipNet(netip.PrefixFrom(testAddr6.Addr(), 128))},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if err != nil || len(local) != 1 {
		t.Errorf("local route for %s = %v, %v; want it installed when Create returns", testAddr6.Addr(), local, err)
	}
	// The node's own /32 is a local route; Create must not add it to main.
	if rs := routeVia(t, h, testAddr4); len(rs) != 0 {
		t.Errorf("route %s added to main table: %v", testAddr4, rs)
	}

	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	requireGone(t, h, testName)
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if !strings.Contains(logs.String(), "device removed") {
		t.Errorf("no removal logged:\n%s", logs.String())
	}
}

func TestCloseAfterTUNClosed(t *testing.T) {
	h := inNetns(t)
	d := mustCreate(t, testConfig(nil))
	// wireguard-go's device.Close closes the tun.Device first.
	if err := d.TUN().Close(); err != nil {
		t.Fatalf("TUN().Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close after TUN().Close: %v", err)
	}
	requireGone(t, h, testName)
}

func TestCreateRemovesStaleDevice(t *testing.T) {
	h := inNetns(t)
	var logs logBuffer
	// A crashed (or hung) node: its Device is never closed and its file
	// descriptor keeps the device alive.
	stale := mustCreate(t, testConfig(nil))
	staleLink, err := h.LinkByName(testName)
	if err != nil {
		t.Fatal(err)
	}

	d := mustCreate(t, testConfig(newLogger(&logs)))
	link, err := h.LinkByName(testName)
	if err != nil {
		t.Fatalf("new device missing: %v", err)
	}
	if link.Attrs().Index == staleLink.Attrs().Index {
		t.Fatalf("second Create reused the stale device (index %d)", link.Attrs().Index)
	}
	if !strings.Contains(logs.String(), "stale device") {
		t.Errorf("stale removal not logged:\n%s", logs.String())
	}

	// Closing the stale Device must not touch its successor.
	if err := stale.Close(); err != nil {
		t.Fatalf("stale Close: %v", err)
	}
	if _, err := h.LinkByName(testName); err != nil {
		t.Fatalf("stale Close removed the new device: %v", err)
	}
	for _, dst := range []netip.Prefix{testRoute4, testRoute6} {
		if rs := routeVia(t, h, dst); len(rs) != 1 || rs[0].LinkIndex != link.Attrs().Index {
			t.Errorf("after stale Close, route %s = %v", dst, rs)
		}
	}
	if addrs := linkAddrs(t, h, link); len(addrs) < 2 {
		t.Errorf("after stale Close, addresses = %v", addrs)
	}

	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	requireGone(t, h, testName)
}

func TestCleanup(t *testing.T) {
	h := inNetns(t)
	if err := Cleanup(testName); err != nil {
		t.Fatalf("Cleanup with no device: %v", err)
	}
	d := mustCreate(t, testConfig(nil))
	if err := Cleanup(testName); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	requireGone(t, h, testName)
	if err := d.Close(); err != nil {
		t.Fatalf("Close after Cleanup: %v", err)
	}
	if err := Cleanup(""); err == nil {
		t.Error("Cleanup(\"\") succeeded")
	}
}

// addForeignLink adds a link that is not ours: a dummy, or a bridge where
// the kernel lacks the dummy driver.
func addForeignLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	var link netlink.Link = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}
	err := h.LinkAdd(link)
	if errors.Is(err, unix.EOPNOTSUPP) {
		link = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		err = h.LinkAdd(link)
	}
	if err != nil {
		t.Fatalf("add foreign %s %q: %v", link.Type(), name, err)
	}
	return link
}

func TestRefusesForeignDevice(t *testing.T) {
	for _, kind := range []string{"dummy-or-bridge", "persistent-tun"} {
		t.Run(kind, func(t *testing.T) {
			h := inNetns(t)
			var foreign netlink.Link
			if kind == "persistent-tun" {
				// A TUN device someone else made: the type matches, the
				// mark does not.
				foreign = &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: testName}, Mode: netlink.TUNTAP_MODE_TUN}
				if err := h.LinkAdd(foreign); err != nil {
					t.Fatalf("add persistent tun: %v", err)
				}
			} else {
				foreign = addForeignLink(t, h, testName)
			}

			d, err := Create(testConfig(nil))
			if err == nil {
				d.Close()
				t.Fatal("Create replaced a foreign device")
			}
			if !errors.Is(err, ErrForeignDevice) || !strings.Contains(err.Error(), testName) {
				t.Errorf("Create error = %v, want ErrForeignDevice naming %q", err, testName)
			}
			t.Logf("Create error: %v", err)
			if err := Cleanup(testName); !errors.Is(err, ErrForeignDevice) {
				t.Errorf("Cleanup error = %v, want ErrForeignDevice", err)
			}
			link, err := h.LinkByName(testName)
			if err != nil || link.Type() != foreign.Type() || link.Attrs().Alias != "" {
				t.Fatalf("foreign device gone or changed: %v, %v", link, err)
			}
			if err := h.LinkDel(link); err != nil {
				t.Errorf("delete foreign device: %v", err)
			}
		})
	}
}

func TestCreateUndoesOnFailure(t *testing.T) {
	h := inNetns(t)
	// Another device already routes the overlay prefix: adding the route
	// fails after the device, addresses and other routes exist.
	other := addForeignLink(t, h, "other0")
	if err := h.LinkSetUp(other); err != nil {
		t.Fatal(err)
	}
	conflict := &netlink.Route{LinkIndex: other.Attrs().Index, Dst: ipNet(testRouteDN), Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(conflict); err != nil {
		t.Fatalf("add conflicting route: %v", err)
	}

	d, err := Create(testConfig(nil))
	if err == nil {
		d.Close()
		t.Fatal("Create succeeded despite the conflicting route")
	}
	if !strings.Contains(err.Error(), testRouteDN.String()) || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("error does not explain the conflict: %v", err)
	}
	if _, err := h.LinkByName(testName); err == nil {
		t.Error("device left behind after failed Create")
	}
	for _, dst := range []netip.Prefix{testRoute4, testRoute6} {
		if rs := routeVia(t, h, dst); len(rs) != 0 {
			t.Errorf("route %s left behind: %v", dst, rs)
		}
	}
	if rs := routeVia(t, h, testRouteDN); len(rs) != 1 || rs[0].LinkIndex != other.Attrs().Index {
		t.Errorf("conflicting route disturbed: %v", rs)
	}
}

func TestCreateInvalidConfig(t *testing.T) {
	// No privileges needed: validation happens before any system call.
	for _, cfg := range []Config{
		{Addrs: []netip.Prefix{testAddr4}},
		{Name: "agentnet-much-too-long", Addrs: []netip.Prefix{testAddr4}},
		{Name: testName},
	} {
		if d, err := Create(cfg); err == nil {
			d.Close()
			t.Errorf("Create(%+v) succeeded", cfg)
		}
	}
}

// TestEchoThroughDevice writes ICMP echo requests into the device from the
// TUN side, as wireguard-go does with decrypted packets, and reads the
// kernel's replies back, through the vnet-header (offload) path.
func TestEchoThroughDevice(t *testing.T) {
	inNetns(t)
	d := mustCreate(t, testConfig(nil))
	defer d.Close()
	tdev := d.TUN()

	const offset = 16 // headroom, as wireguard-go leaves for its header
	type packet []byte
	got := make(chan packet, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(got)
		bufs := make([][]byte, tdev.BatchSize())
		sizes := make([]int, len(bufs))
		for i := range bufs {
			bufs[i] = make([]byte, offset+65535)
		}
		for {
			n, err := tdev.Read(bufs, sizes, offset)
			for i := range n {
				select {
				case got <- append(packet(nil), bufs[i][offset:offset+sizes[i]]...):
				default:
				}
			}
			if err != nil && n == 0 {
				return // closed
			}
		}
	}()
	defer func() { d.Close(); wg.Wait() }()
	go func() {
		for range tdev.Events() { // nothing else reads them in this test
		}
	}()

	peer4 := netip.MustParseAddr("100.96.0.2")
	peer6 := netip.MustParseAddr("fd7a:115c:a1e0::2")
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
	}{
		{"ipv4", peer4, testAddr4.Addr()},
		{"ipv6", peer6, testAddr6.Addr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := echoRequest(tc.src, tc.dst, 0x4242, []byte("agentnet"))
			buf := append(make([]byte, offset), req...)
			if _, err := tdev.Write([][]byte{buf}, offset); err != nil {
				t.Fatalf("Write: %v", err)
			}
			deadline := time.After(5 * time.Second)
			for {
				select {
				case p, ok := <-got:
					if !ok {
						t.Fatal("device closed before the reply")
					}
					if isEchoReply(p, tc.dst, tc.src, 0x4242) {
						return
					}
				case <-deadline:
					t.Fatal("no echo reply from the kernel within 5s")
				}
			}
		})
	}
}

func checksum(sum uint32, b []byte) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// echoRequest builds an IPv4 ICMP or ICMPv6 echo request from src to dst.
func echoRequest(src, dst netip.Addr, id uint16, payload []byte) []byte {
	icmp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], 1) // sequence
	copy(icmp[8:], payload)
	if src.Is4() {
		icmp[0] = 8 // echo request
		binary.BigEndian.PutUint16(icmp[2:], fold(checksum(0, icmp)))
		ip := make([]byte, 20, 20+len(icmp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
		ip[8] = 64 // TTL
		ip[9] = unix.IPPROTO_ICMP
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], fold(checksum(0, ip)))
		return append(ip, icmp...)
	}
	icmp[0] = 128 // ICMPv6 echo request
	s, d := src.As16(), dst.As16()
	pseudo := checksum(0, s[:])
	pseudo = checksum(pseudo, d[:])
	pseudo += uint32(len(icmp)) + unix.IPPROTO_ICMPV6
	binary.BigEndian.PutUint16(icmp[2:], fold(checksum(pseudo, icmp)))
	ip := make([]byte, 40, 40+len(icmp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
	ip[6] = unix.IPPROTO_ICMPV6
	ip[7] = 64 // hop limit
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(ip, icmp...)
}

// isEchoReply reports whether p is an echo reply from src to dst with id.
func isEchoReply(p []byte, src, dst netip.Addr, id uint16) bool {
	var icmp []byte
	var ps, pd netip.Addr
	switch {
	case src.Is4() && len(p) >= 28 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_ICMP:
		hl := int(p[0]&0xf) * 4
		ps, pd = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		icmp = p[hl:]
		if icmp[0] != 0 {
			return false
		}
	case src.Is6() && len(p) >= 48 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_ICMPV6:
		ps, pd = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		icmp = p[40:]
		if icmp[0] != 129 {
			return false
		}
	default:
		return false
	}
	return ps == src && pd == dst && len(icmp) >= 8 && binary.BigEndian.Uint16(icmp[4:]) == id
}
