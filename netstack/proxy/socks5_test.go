package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTestSOCKS5(t *testing.T, cfg SOCKS5Config) *SOCKS5 {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := NewSOCKS5(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// socksRequest performs greeting and one request; it returns the conn,
// the reply code and BND.
func socksRequest(t *testing.T, proxy string, cmd, atyp byte, host string, port uint16) (net.Conn, byte, netip.AddrPort) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("method reply %v, %v", m, err)
	}
	req := []byte{5, cmd, 0, atyp}
	switch atyp {
	case atypDomain:
		req = append(req, byte(len(host)))
		req = append(req, host...)
	default:
		req = append(req, netip.MustParseAddr(host).AsSlice()...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	c.Write(req)
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	bhost, bport, err := readAddr(c, hdr[3])
	if err != nil {
		t.Fatalf("reading reply address: %v", err)
	}
	c.SetDeadline(time.Time{})
	return c, hdr[1], netip.AddrPortFrom(netip.MustParseAddr(bhost), bport)
}

func checkEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func TestSOCKS5ConnectByName(t *testing.T) {
	f := newFakeOverlay()
	vap := f.addTCP("search", tcpEcho(t))
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	for _, name := range []string{"search", "search.agents.internal", "SEARCH.agents.internal."} {
		c, rep, _ := socksRequest(t, s.Addr().String(), cmdConnect, atypDomain, name, vap.Port())
		if rep != repSucceeded {
			t.Fatalf("%s: reply %#x", name, rep)
		}
		checkEcho(t, c, "hello "+name)
		// Half-close: the echo server sees EOF, closes, and we see EOF.
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("after CloseWrite: read %d, %v; want EOF", n, err)
		}
	}
}

func TestSOCKS5ConnectByOverlayIP(t *testing.T) {
	f := newFakeOverlay()
	vap := f.addTCP("search", tcpEcho(t))
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	c, rep, _ := socksRequest(t, s.Addr().String(), cmdConnect, atypIPv4, vap.Addr().String(), vap.Port())
	if rep != repSucceeded {
		t.Fatalf("reply %#x", rep)
	}
	checkEcho(t, c, "by ip")
	// A domain that is an overlay IP literal works too.
	c, rep, _ = socksRequest(t, s.Addr().String(), cmdConnect, atypDomain, vap.Addr().String(), vap.Port())
	if rep != repSucceeded {
		t.Fatalf("IP as domain: reply %#x", rep)
	}
	checkEcho(t, c, "by ip literal")
	// IPv4-mapped IPv6 of an overlay IP.
	mapped := netip.AddrFrom16(vap.Addr().As16())
	c, rep, _ = socksRequest(t, s.Addr().String(), cmdConnect, atypIPv6, mapped.String(), vap.Port())
	if rep != repSucceeded {
		t.Fatalf("mapped IPv6: reply %#x", rep)
	}
	checkEcho(t, c, "by mapped ip")
}

func TestSOCKS5UnknownName(t *testing.T) {
	f := newFakeOverlay()
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	c, rep, _ := socksRequest(t, s.Addr().String(), cmdConnect, atypDomain, "nosuch.agents.internal", 80)
	if rep != repHostUnreachable {
		t.Fatalf("reply %#x, want %#x", rep, repHostUnreachable)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after failure reply")
	}
}

func TestSOCKS5ConnectRefused(t *testing.T) {
	f := newFakeOverlay()
	f.name("search") // known name, nothing listening on the port
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	_, rep, _ := socksRequest(t, s.Addr().String(), cmdConnect, atypDomain, "search", 9)
	if rep != repConnRefused {
		t.Fatalf("reply %#x, want %#x", rep, repConnRefused)
	}
}

func TestSOCKS5Outside(t *testing.T) {
	f := newFakeOverlay()
	outside := netip.MustParseAddrPort(tcpEcho(t))

	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	_, rep, _ := socksRequest(t, s.Addr().String(), cmdConnect, atypIPv4, outside.Addr().String(), outside.Port())
	if rep != repNotAllowed {
		t.Fatalf("outside refused: reply %#x, want %#x", rep, repNotAllowed)
	}

	a := newTestSOCKS5(t, SOCKS5Config{Overlay: f, AllowOutside: true})
	c, rep, _ := socksRequest(t, a.Addr().String(), cmdConnect, atypIPv4, outside.Addr().String(), outside.Port())
	if rep != repSucceeded {
		t.Fatalf("AllowOutside: reply %#x", rep)
	}
	checkEcho(t, c, "outside")
	// With AllowOutside, names the node does not know go to the host resolver.
	c, rep, _ = socksRequest(t, a.Addr().String(), cmdConnect, atypDomain, "localhost", outside.Port())
	if rep != repSucceeded {
		t.Skipf("localhost via host resolver: reply %#x (host resolver may lack localhost)", rep)
	}
	checkEcho(t, c, "outside by name")
}

func TestSOCKS5UnsupportedCommand(t *testing.T) {
	f := newFakeOverlay()
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	_, rep, _ := socksRequest(t, s.Addr().String(), cmdBind, atypIPv4, "100.96.0.2", 80)
	if rep != repCmdNotSupported {
		t.Fatalf("BIND: reply %#x, want %#x", rep, repCmdNotSupported)
	}
}

func TestSOCKS5Garbage(t *testing.T) {
	f := newFakeOverlay()
	vap := f.addTCP("search", tcpEcho(t))
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{4, 1, 0, 80, 127, 0, 0, 1, 0},           // SOCKS4
		{5, 1, 0, 4, 1, 0, 9},                    // bad version in request
		{5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, // bad request version
		{5, 1, 0, 5, 1, 0, 3, 0, 0, 80},          // empty domain
		{5, 0},                                   // no methods
		{5, 1, 2},                                // only user/pass offered
	} {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = io.ReadAll(c)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("junk %q: server did not close: %v", junk, err)
		}
		c.Close()
	}
	// Unsupported address type gets 0x08.
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{5, 1, 0, 5, 1, 0, 9})
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(c)
	if len(b) < 4 || b[3] != repAddrTypeNotSupport {
		t.Fatalf("bad ATYP: got %v", b)
	}
	// The server still serves.
	c2, rep, _ := socksRequest(t, s.Addr().String(), cmdConnect, atypDomain, "search", vap.Port())
	if rep != repSucceeded {
		t.Fatalf("after garbage: reply %#x", rep)
	}
	checkEcho(t, c2, "still alive")
}

func TestSOCKS5HandshakeTimeout(t *testing.T) {
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: newFakeOverlay(), HandshakeTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{5}) // and then nothing
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("server did not close a stalled handshake: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

func TestSOCKS5UDPAssociate(t *testing.T) {
	f := newFakeOverlay()
	vap := f.addUDP("dnsish", udpEcho(t))
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	ctl, rep, relay := socksRequest(t, s.Addr().String(), cmdUDPAssociate, atypIPv4, "0.0.0.0", 0)
	if rep != repSucceeded {
		t.Fatalf("reply %#x", rep)
	}
	if !relay.Addr().IsLoopback() || relay.Port() == 0 {
		t.Fatalf("relay address %v", relay)
	}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()

	send := func(frag, atyp byte, host string, payload string) {
		b := []byte{0, 0, frag, atyp}
		if atyp == atypDomain {
			b = append(b, byte(len(host)))
			b = append(b, host...)
		} else {
			b = append(b, netip.MustParseAddr(host).AsSlice()...)
		}
		b = binary.BigEndian.AppendUint16(b, vap.Port())
		b = append(b, payload...)
		if _, err := uc.WriteToUDPAddrPort(b, relay); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() (netip.AddrPort, string) {
		buf := make([]byte, 2048)
		uc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no reply: %v", err)
		}
		host, port, payload, err := parseUDPHeader(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		return netip.AddrPortFrom(netip.MustParseAddr(host), port), string(payload)
	}

	send(1, atypDomain, "dnsish", "fragment") // FRAG != 0: dropped
	send(0, atypDomain, "dnsish.agents.internal", "by name")
	from, got := recv()
	if got != "by name" || from != vap {
		t.Fatalf("got %q from %v, want %q from %v", got, from, "by name", vap)
	}
	send(0, atypIPv4, vap.Addr().String(), "by ip")
	if from, got = recv(); got != "by ip" || from != vap {
		t.Fatalf("got %q from %v", got, from)
	}
	send(0, atypIPv4, "127.0.0.1", "outside") // outside: dropped
	send(0, atypDomain, "nosuch", "unknown")  // unknown: dropped
	send(0, atypDomain, "dnsish", "last")
	if _, got = recv(); got != "last" {
		t.Fatalf("got %q, want last (fragment/outside/unknown must be dropped)", got)
	}

	// Closing the control connection ends the association.
	ctl.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		send(0, atypDomain, "dnsish", "after close")
		uc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := uc.ReadFromUDPAddrPort(make([]byte, 2048)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("association outlived its control connection")
		}
	}
}

func TestCurlSOCKS5(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	f := newFakeOverlay()
	web := httpHello(t, "hello from search")
	vap := f.addTCP("search", web)
	s := newTestSOCKS5(t, SOCKS5Config{Overlay: f})
	url := "http://search.agents.internal:" + strconv.Itoa(int(vap.Port())) + "/x"
	out, err := exec.Command(curl, "-sS", "--max-time", "10", "--noproxy", "", "--socks5-hostname", s.Addr().String(), url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	if !bytes.Contains(out, []byte("hello from search")) {
		t.Fatalf("curl output %q", out)
	}
	// curl exits 97 (proxy handshake error) on an unknown name.
	cmd := exec.Command(curl, "-sS", "--max-time", "10", "--socks5-hostname", s.Addr().String(), "http://nosuch:80/")
	cmd.Env = append(os.Environ(), "ALL_PROXY=", "http_proxy=")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("curl to unknown name succeeded: %s", out)
	}
}
