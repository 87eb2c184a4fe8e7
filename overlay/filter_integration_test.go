package overlay

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	wgtun "golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/agentnet/agentnet/netstack"
	"github.com/agentnet/agentnet/wire"
)

// wgNode is one end of the integration tests: a real wireguard-go device
// on a Bind at 127.0.0.1 whose TUN side is the packet filter over a gVisor
// netstack (or, for the spoofer, wireguard-go's channel TUN), logging
// through wgLogger as a Node does.
type wgNode struct {
	a4, a6 netip.Addr
	stack  *netstack.Stack // nil for a channel node
	ch     *tuntest.ChannelTUN
	filter *filterDevice
	dev    *device.Device
	bind   *Bind
	key    *ecdh.PrivateKey
	logs   *logRecords
}

func newWGNode(t *testing.T, a4, a6 netip.Addr, nf *wire.Filter, channel bool) *wgNode {
	t.Helper()
	n := &wgNode{a4: a4, a6: a6, logs: &logRecords{}}
	log := slog.New(n.logs)
	var tdev wgtun.Device
	if channel {
		n.ch = tuntest.NewChannelTUN()
		tdev = n.ch.TUN()
	} else {
		st, err := netstack.New(netstack.Config{Addrs: []netip.Addr{a4, a6}})
		if err != nil {
			t.Fatal(err)
		}
		n.stack = st
		n.filter = newFilterDevice(st.TUN(), filterConfig{Logger: log})
		n.filter.setFilter(nf, a4, a6)
		tdev = n.filter
	}
	var err error
	if n.key, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	n.bind = NewBind(BindConfig{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), Logger: log})
	var seen func(string, []any) bool
	if n.filter != nil {
		seen = n.filter.wgLogged
	}
	n.dev = device.NewDevice(tdev, n.bind, wgLogger(log, seen))
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(n.key.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.dev.Close()
		if n.stack != nil {
			n.stack.Close()
		}
	})
	return n
}

// peer makes p a WireGuard peer of n with p's addresses as allowed IPs.
func (n *wgNode) peer(t *testing.T, p *wgNode) {
	t.Helper()
	cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\nallowed_ip=%s/128\n",
		hex.EncodeToString(p.key.PublicKey().Bytes()), p.bind.LocalAddr(), p.a4, p.a6)
	if err := n.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

func hostRule(name, proto string, ports []wire.PortRange, peers ...netip.Addr) wire.FilterRule {
	r := wire.FilterRule{Rule: name, Protos: []string{proto}, Ports: ports}
	for _, p := range peers {
		r.Peers = append(r.Peers, netip.PrefixFrom(p, p.BitLen()).String())
	}
	return r
}

func ports(p ...uint16) []wire.PortRange {
	var out []wire.PortRange
	for _, x := range p {
		out = append(out, wire.PortRange{First: x, Last: x})
	}
	return out
}

var (
	iA4, iA6 = netip.MustParseAddr("100.96.0.1"), netip.MustParseAddr("fd7a:115c:a1e0::1")
	iB4, iB6 = netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("fd7a:115c:a1e0::2")
	iC4, iC6 = netip.MustParseAddr("100.96.0.3"), netip.MustParseAddr("fd7a:115c:a1e0::3")
)

// filterNet is A (client) and B (server) with mismatched policies: A may
// open tcp 8080 and 9090, udp 9000 and 9001 and ping to B; B lets A open
// only tcp 8080, udp 9000 and ping, and lets C send udp 9000.
func filterNet(t *testing.T) (a, b *wgNode) {
	fa := &wire.Filter{PolicyVersion: 41, Outbound: []wire.FilterRule{
		hostRule("a-web", "tcp", ports(8080, 9090), iB4, iB6),
		hostRule("a-udp", "udp", ports(9000, 9001), iB4, iB6),
		hostRule("a-ping", "icmp", nil, iB4, iB6),
	}}
	fb := &wire.Filter{PolicyVersion: 42, Inbound: []wire.FilterRule{
		hostRule("b-web", "tcp", ports(8080), iA4, iA6),
		hostRule("b-udp", "udp", ports(9000), iA4, iA6, iC4),
		hostRule("b-ping", "icmp", nil, iA4, iA6),
	}}
	a = newWGNode(t, iA4, iA6, fa, false)
	b = newWGNode(t, iB4, iB6, fb, false)
	a.peer(t, b)
	b.peer(t, a)
	return a, b
}

func serveEcho(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestFilterOverWireGuard runs the policy between two real netstacks over
// real wireguard-go devices on loopback UDP.
func TestFilterOverWireGuard(t *testing.T) {
	a, b := filterNet(t)
	for _, ap := range []netip.AddrPort{netip.AddrPortFrom(iB4, 8080), netip.AddrPortFrom(iB6, 8080), netip.AddrPortFrom(iB4, 9090)} {
		ln, err := b.stack.ListenTCP(ap)
		if err != nil {
			t.Fatal(err)
		}
		serveEcho(t, ln)
	}

	t.Run("allowed", func(t *testing.T) {
		for _, dst := range []string{"100.96.0.2:8080", "[fd7a:115c:a1e0::2]:8080"} {
			c, err := a.stack.DialContext(ctxFor(t, 10*time.Second), "tcp", dst)
			if err != nil {
				t.Fatalf("dial %s: %v", dst, err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := []byte("hello through the filter")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
				t.Fatalf("echo from %s: %q %v", dst, got, err)
			}
			c.Close()
		}
		if _, err := a.stack.Ping(ctxFor(t, 5*time.Second), iB4); err != nil {
			t.Fatalf("ping: %v", err)
		}
	})

	t.Run("tcp denied fails fast", func(t *testing.T) {
		start := time.Now()
		c, err := a.stack.DialContext(ctxFor(t, 5*time.Second), "tcp", "100.96.0.2:22")
		took := time.Since(start)
		if err == nil {
			c.Close()
			t.Fatal("dial to a denied port succeeded")
		}
		if took > time.Second || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("dial to a denied port: %v after %v; want connection refused in < 1s", err, took)
		}
		t.Logf("denied dial: %v after %v", err, took)
		// a-web lists B, but not port 22: the denial is blamed on it.
		if _, d := counts(a, dirOut, "a-web"); d == 0 {
			t.Errorf("denial to B:22 not counted on a-web: %+v", a.filter.status())
		}
		logs := a.logs.denials()
		if len(logs) == 0 || logs[0]["port"] != "22" || logs[0]["rule"] != "a-web" || logs[0]["policy_version"] != "41" || logs[0]["direction"] != "outbound" {
			t.Fatalf("denial logs %v: want port 22, policy_version 41, outbound", logs)
		}
		if a.filter.status().Rejects == 0 {
			t.Fatal("no reject counted")
		}
	})

	t.Run("udp denied gets unreachable", func(t *testing.T) {
		c, err := a.stack.DialContext(ctxFor(t, 5*time.Second), "udp", "100.96.0.2:9999")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The reject is injected synchronously while wireguard-go reads the
		// datagram, so once it is counted the socket holds the error. (A
		// gonet Read already blocked is not woken by it: gonet waits for
		// readable events only. The next Read or Write returns it.)
		before := a.filter.status().Rejects
		start := time.Now()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		for a.filter.status().Rejects == before && time.Since(start) < 3*time.Second {
			time.Sleep(time.Millisecond)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(make([]byte, 16))
		if err == nil || !strings.Contains(err.Error(), "refused") || time.Since(start) > time.Second {
			t.Fatalf("read after a denied UDP send: %v after %v; want connection refused at once; filter %+v", err, time.Since(start), a.filter.status())
		}
		t.Logf("denied udp: %v after %v", err, time.Since(start))
	})

	t.Run("inbound denial when only the sender allows it", func(t *testing.T) {
		before := b.filter.status()
		_, err := a.stack.DialContext(ctxFor(t, 700*time.Millisecond), "tcp", "100.96.0.2:9090")
		if err == nil {
			t.Fatal("dial to 9090 succeeded though B's inbound policy does not allow it")
		}
		_, denied := counts(b, dirIn, "b-web")
		if denied == 0 {
			t.Fatalf("B did not count the denial on b-web (it lists A, not 9090): %+v", b.filter.status())
		}
		if before.Rejects != b.filter.status().Rejects {
			t.Error("B answered a denied inbound packet; it must drop silently")
		}
		var found bool
		for _, l := range b.logs.denials() {
			if l["direction"] == "inbound" && l["port"] == "9090" && l["rule"] == "b-web" && l["policy_version"] == "42" {
				found = true
			}
		}
		if !found {
			t.Fatalf("no inbound denial log for 9090: %v", b.logs.denials())
		}
	})

	t.Run("udp allowed both ways", func(t *testing.T) {
		pc, err := b.stack.ListenUDP(netip.AddrPortFrom(iB4, 9000))
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			buf := make([]byte, 100)
			n, from, err := pc.ReadFrom(buf)
			if err == nil {
				pc.WriteTo(buf[:n], from)
			}
		}()
		c, err := a.stack.DialContext(ctxFor(t, 5*time.Second), "udp", "100.96.0.2:9000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ping"))
		buf := make([]byte, 16)
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("udp echo: %q %v", buf[:n], err)
		}
	})
}

func counts(n *wgNode, dir direction, rule string) (allowed, denied uint64) {
	rc := n.filter.ctrs.get(dir, rule)
	return rc.allowed.Load(), rc.denied.Load()
}

// TestFilterSpoofedSource: a peer that sends a packet with another node's
// source address is dropped by wireguard-go's cryptokey routing, and the
// node counts and logs it; the same peer's honest packet is delivered.
func TestFilterSpoofedSource(t *testing.T) {
	_, b := filterNet(t)
	c := newWGNode(t, iC4, iC6, nil, true)
	c.peer(t, b)
	b.peer(t, c)
	pc, err := b.stack.ListenUDP(netip.AddrPortFrom(iB4, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	forged := testPkt{src: iA4, dst: iB4, proto: protoUDP, sport: 1111, dport: 9000, payload: []byte("forged")}.build()
	honest := testPkt{src: iC4, dst: iB4, proto: protoUDP, sport: 2222, dport: 9000, payload: []byte("honest")}.build()
	c.ch.Outbound <- forged
	c.ch.Outbound <- honest

	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 100)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("honest packet not delivered: %v", err)
	}
	// wireguard-go keeps one peer's packets in order: the forged one came
	// first and would have been read first.
	if string(buf[:n]) != "honest" || from.String() != "100.96.0.3:2222" {
		t.Fatalf("delivered %q from %v; want only the honest packet from 100.96.0.3:2222", buf[:n], from)
	}
	if got := b.filter.status().Spoofed; got != 1 {
		t.Fatalf("spoofed counter %d, want 1", got)
	}
	var logged bool
	b.logs.mu.Lock()
	for _, r := range b.logs.recs {
		if r.Level == slog.LevelWarn && strings.Contains(r.Message, "forged source") {
			logged = true
		}
	}
	b.logs.mu.Unlock()
	if !logged {
		t.Fatal("spoofed packet not logged at Warn")
	}
}
