package proxy

import (
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestForward(t *testing.T) {
	f := newFakeOverlay()
	vap := f.addTCP("search", tcpEcho(t))
	fw, err := NewForward(ForwardConfig{Listen: "127.0.0.1:0", Target: "search:" + strconv.Itoa(int(vap.Port())), Overlay: f})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	for i := range 3 {
		c, err := net.Dial("tcp", fw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, c, "forwarded "+strconv.Itoa(i))
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Fatalf("after half-close: %q %v", b, err)
		}
		c.Close()
	}
}

func TestForwardUnknownTarget(t *testing.T) {
	f := newFakeOverlay()
	vap := f.addTCP("search", tcpEcho(t))
	bad, err := NewForward(ForwardConfig{Listen: "127.0.0.1:0", Target: "nosuch:8080", Overlay: f})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	good, err := NewForward(ForwardConfig{Listen: "127.0.0.1:0", Target: vap.String(), Overlay: f})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	for range 2 { // the bad forward keeps accepting
		c, err := net.Dial("tcp", bad.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Fatalf("unknown target: local conn not closed: %q %v", b, err)
		}
		c.Close()
	}
	c, err := net.Dial("tcp", good.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkEcho(t, c, "good target")
	// The name appears later (e.g. a new peer joins): the same forward works.
	late := tcpEcho(t)
	f.addTCP("late", late)
	fl, err := NewForward(ForwardConfig{Listen: "127.0.0.1:0", Target: "late:" + late[strings.LastIndex(late, ":")+1:], Overlay: f})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	c2, err := net.Dial("tcp", fl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	checkEcho(t, c2, "late")
}

func TestExpose(t *testing.T) {
	f := newFakeOverlay()
	local := tcpEcho(t)
	cfg, err := ParseExpose("8080=" + local)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Overlay = f
	e, err := NewExpose(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// An overlay peer connects to port 8080 (the fake's real listener).
	c, err := net.Dial("tcp", f.overlayListener(8080))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkEcho(t, c, "exposed")
	// The same overlay port twice is an error naming the port.
	if _, err := NewExpose(cfg); err == nil || !strings.Contains(err.Error(), "8080") {
		t.Fatalf("second expose on 8080: %v", err)
	}
	// A local target that is down: the overlay conn is closed.
	cfg2 := ExposeConfig{Port: 8081, Target: "127.0.0.1:1", Overlay: f}
	e2, err := NewExpose(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	c2, err := net.Dial("tcp", f.overlayListener(8081))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(3 * time.Second))
	if b, err := io.ReadAll(c2); err != nil || len(b) != 0 {
		t.Fatalf("dead local target: %q %v", b, err)
	}
}

func TestParseForward(t *testing.T) {
	for _, tc := range []struct {
		in, listen, target, err string
	}{
		{in: "127.0.0.1:9000=search:8080", listen: "127.0.0.1:9000", target: "search:8080"},
		{in: "9000=search.agents.internal:80", listen: "127.0.0.1:9000", target: "search.agents.internal:80"},
		{in: "[::1]:9000=100.96.0.2:22", listen: "[::1]:9000", target: "100.96.0.2:22"},
		{in: ":9000=search:8080", listen: ":9000", target: "search:8080"},
		{in: "search:8080", err: "want LISTEN=TARGET"},
		{in: "127.0.0.1:9000=search", err: "missing port"},
		{in: "127.0.0.1:9000=:8080", err: "missing host"},
		{in: "127.0.0.1:9000=search:0", err: "port 0"},
		{in: "127.0.0.1:9000=search:http", err: "bad port"},
		{in: "127.0.0.1:99999=search:80", err: "local address"},
		{in: "localhost=search:80", err: "local address"},
		{in: "=search:80", err: "local address"},
	} {
		cfg, err := ParseForward(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseForward(%q) error = %v, want containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || cfg.Listen != tc.listen || cfg.Target != tc.target {
			t.Errorf("ParseForward(%q) = %+v, %v; want %s → %s", tc.in, cfg, err, tc.listen, tc.target)
		}
	}
}

func TestParseExpose(t *testing.T) {
	for _, tc := range []struct {
		in     string
		port   uint16
		target string
		err    string
	}{
		{in: "8080", port: 8080, target: "127.0.0.1:8080"},
		{in: "80=127.0.0.1:8080", port: 80, target: "127.0.0.1:8080"},
		{in: "80=8080", port: 80, target: "127.0.0.1:8080"},
		{in: "443=[::1]:8443", port: 443, target: "[::1]:8443"},
		{in: "22=localhost:2222", port: 22, target: "localhost:2222"},
		{in: "", err: "not a port"},
		{in: "0", err: "port 0"},
		{in: "http", err: "not a port"},
		{in: "70000", err: "not a port"},
		{in: "80=", err: "empty target"},
		{in: "80=127.0.0.1", err: "missing port"},
		{in: "80=127.0.0.1:0", err: "port 0"},
		{in: "127.0.0.1:80=8080", err: "overlay port"},
	} {
		cfg, err := ParseExpose(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseExpose(%q) error = %v, want containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || cfg.Port != tc.port || cfg.Target != tc.target {
			t.Errorf("ParseExpose(%q) = %+v, %v; want %d → %s", tc.in, cfg, err, tc.port, tc.target)
		}
	}
}
