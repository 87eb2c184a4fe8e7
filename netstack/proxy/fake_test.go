package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeOverlay stands in for a node: names map to fake virtual IPs in
// 100.96.0.0/12, and each registered virtual ip:port maps to a real
// listener on 127.0.0.1.
type fakeOverlay struct {
	mu      sync.Mutex
	names   map[string]netip.Addr
	tcp     map[netip.AddrPort]string
	udp     map[netip.AddrPort]netip.AddrPort // virtual → real
	udpRev  map[netip.AddrPort]netip.AddrPort // real → virtual
	listens map[uint16]string                 // overlay port → real listener
	next    byte
}

var (
	fakePrefix = netip.MustParsePrefix("100.96.0.0/12")
	fakeDNSIP  = netip.MustParseAddr("100.100.100.100")
)

func newFakeOverlay() *fakeOverlay {
	return &fakeOverlay{
		names:   map[string]netip.Addr{},
		tcp:     map[netip.AddrPort]string{},
		udp:     map[netip.AddrPort]netip.AddrPort{},
		udpRev:  map[netip.AddrPort]netip.AddrPort{},
		listens: map[uint16]string{},
		next:    1,
	}
}

// name returns the virtual IP of name, assigning one if needed.
func (f *fakeOverlay) name(name string) netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ip, ok := f.names[name]; ok {
		return ip
	}
	f.next++
	ip := netip.AddrFrom4([4]byte{100, 96, 0, f.next})
	f.names[name] = ip
	return ip
}

// addTCP makes name:port (port = real's port) reach the real listener.
func (f *fakeOverlay) addTCP(name, real string) netip.AddrPort {
	ip := f.name(name)
	ap := netip.AddrPortFrom(ip, netip.MustParseAddrPort(real).Port())
	f.mu.Lock()
	f.tcp[ap] = real
	f.mu.Unlock()
	return ap
}

func (f *fakeOverlay) addUDP(name, real string) netip.AddrPort {
	ip := f.name(name)
	r := netip.MustParseAddrPort(real)
	ap := netip.AddrPortFrom(ip, r.Port())
	f.mu.Lock()
	f.udp[ap] = r
	f.udpRev[r] = ap
	f.mu.Unlock()
	return ap
}

func (f *fakeOverlay) lookup(host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".agents.internal")
	f.mu.Lock()
	defer f.mu.Unlock()
	if ip, ok := f.names[n]; ok {
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("unknown agent name %q: not in this node's network map", host)
}

func (f *fakeOverlay) Resolve(_ context.Context, host string) (netip.Addr, error) {
	return f.lookup(host)
}

func (f *fakeOverlay) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip == fakeDNSIP || fakePrefix.Contains(ip)
}

func (f *fakeOverlay) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, ps, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	ip, err := f.lookup(host)
	if err != nil {
		return nil, fmt.Errorf("fake overlay: dial %s: %w", address, err)
	}
	p, _ := strconv.ParseUint(ps, 10, 16)
	f.mu.Lock()
	real, ok := f.tcp[netip.AddrPortFrom(ip, uint16(p))]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("fake overlay: dial %s: connection refused", address)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

func (f *fakeOverlay) Listen(network, address string) (net.Listener, error) {
	_, ps, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	p, _ := strconv.ParseUint(ps, 10, 16)
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.listens[uint16(p)]; ok {
		return nil, fmt.Errorf("fake overlay: port %d: address already in use", p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.listens[uint16(p)] = ln.Addr().String()
	return ln, nil
}

// overlayListener returns the real address behind overlay port p.
func (f *fakeOverlay) overlayListener(p uint16) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listens[p]
}

func (f *fakeOverlay) ListenPacket(network, address string) (net.PacketConn, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &fakePacketConn{PacketConn: pc, f: f}, nil
}

// fakePacketConn translates virtual addresses to real ones and back.
type fakePacketConn struct {
	net.PacketConn
	f *fakeOverlay
}

func (c *fakePacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, errors.New("fake overlay: want *net.UDPAddr")
	}
	c.f.mu.Lock()
	real, ok := c.f.udp[ua.AddrPort()]
	c.f.mu.Unlock()
	if !ok {
		return len(b), nil // nobody there: lost, like UDP
	}
	return c.PacketConn.WriteTo(b, net.UDPAddrFromAddrPort(real))
}

func (c *fakePacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		c.f.mu.Lock()
		v, ok := c.f.udpRev[from.(*net.UDPAddr).AddrPort()]
		c.f.mu.Unlock()
		if ok {
			return n, net.UDPAddrFromAddrPort(v), nil
		}
	}
}

// tcpEcho starts an echo server on 127.0.0.1 that answers until EOF, then
// closes. Cleanup stops it and waits for its goroutines.
func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// udpEcho starts a UDP echo server on 127.0.0.1.
func udpEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String()
}
