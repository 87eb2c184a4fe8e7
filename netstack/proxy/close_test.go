package proxy

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestListenInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	f := newFakeOverlay()
	check := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "in use") {
			t.Errorf("%s on busy %s: %v", what, addr, err)
		}
	}
	_, err = NewSOCKS5(SOCKS5Config{Listen: addr, Overlay: f})
	check("socks5", err)
	_, err = NewHTTPProxy(HTTPProxyConfig{Listen: addr, Overlay: f})
	check("http", err)
	_, err = NewForward(ForwardConfig{Listen: addr, Target: "search:80", Overlay: f})
	check("forward", err)
	if _, err := NewSOCKS5(SOCKS5Config{Listen: addr}); err == nil {
		t.Error("missing Overlay accepted")
	}
}

// TestCloseWithActiveConnections leaves connections open in every state
// (tunnel, half-finished handshake, UDP association, forward, expose) and
// checks Close returns quickly and leaks nothing.
func TestCloseWithActiveConnections(t *testing.T) {
	f := newFakeOverlay()
	echo := tcpEcho(t)
	vap := f.addTCP("search", echo)
	f.addUDP("u", udpEcho(t))
	// The echo servers stop in Cleanup, after this check.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	port := strconv.Itoa(int(vap.Port()))

	s, err := NewSOCKS5(SOCKS5Config{Listen: "127.0.0.1:0", Overlay: f})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHTTPProxy(HTTPProxyConfig{Listen: "127.0.0.1:0", Overlay: f})
	if err != nil {
		t.Fatal(err)
	}
	fw, err := NewForward(ForwardConfig{Listen: "127.0.0.1:0", Target: "search:" + port, Overlay: f})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := NewExpose(ExposeConfig{Port: 7000, Target: echo, Overlay: f})
	if err != nil {
		t.Fatal(err)
	}

	var clients []net.Conn
	c, rep, _ := socksRequest(t, s.Addr().String(), cmdConnect, atypDomain, "search", vap.Port())
	if rep != 0 {
		t.Fatalf("socks reply %#x", rep)
	}
	checkEcho(t, c, "x")
	clients = append(clients, c)
	u, rep, _ := socksRequest(t, s.Addr().String(), cmdUDPAssociate, atypIPv4, "0.0.0.0", 0)
	if rep != 0 {
		t.Fatalf("udp reply %#x", rep)
	}
	clients = append(clients, u)
	stalled, err := net.Dial("tcp", s.Addr().String()) // handshake never finishes
	if err != nil {
		t.Fatal(err)
	}
	clients = append(clients, stalled)
	code, tc, _ := httpConnect(t, h.Addr(), "search:"+port)
	if code != 200 {
		t.Fatalf("CONNECT %d", code)
	}
	clients = append(clients, tc)
	idle, err := net.Dial("tcp", h.Addr().String()) // no request
	if err != nil {
		t.Fatal(err)
	}
	clients = append(clients, idle)
	fc, err := net.Dial("tcp", fw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, fc, "f")
	clients = append(clients, fc)
	ec, err := net.Dial("tcp", f.overlayListener(7000))
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, ec, "e")
	clients = append(clients, ec)

	for _, cl := range []io.Closer{s, h, fw, ex} {
		start := time.Now()
		if err := cl.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%T.Close took %v", cl, d)
		}
		cl.Close() // idempotent
	}
	// Every client sees its connection end.
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		// An end is EOF or, when the server closed with data unread or
		// in flight, a reset; a timeout means Close left it open.
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client %d: not closed by Close: %v", i, err)
		}
		c.Close()
	}
}
