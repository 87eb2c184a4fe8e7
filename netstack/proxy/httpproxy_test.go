package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// httpHello starts an HTTP server answering body; it returns its address.
func httpHello(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s path=%s", body, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func newTestHTTPProxy(t *testing.T, cfg HTTPProxyConfig) *HTTPProxy {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	h, err := NewHTTPProxy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// proxyGet fetches target through the proxy and returns status and body.
func proxyGet(t *testing.T, proxy net.Addr, target string) (int, string) {
	t.Helper()
	pu, _ := url.Parse("http://" + proxy.String())
	tr := &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPProxyGet(t *testing.T) {
	f := newFakeOverlay()
	vap := f.addTCP("search", httpHello(t, "hello from search"))
	h := newTestHTTPProxy(t, HTTPProxyConfig{Overlay: f})
	port := strconv.Itoa(int(vap.Port()))
	for _, u := range []string{
		"http://search.agents.internal:" + port + "/x",
		"http://search:" + port + "/x",
		"http://" + vap.String() + "/x",
	} {
		code, body := proxyGet(t, h.Addr(), u)
		if code != 200 || body != "hello from search path=/x" {
			t.Fatalf("%s: %d %q", u, code, body)
		}
	}
}

func TestHTTPProxyRefusals(t *testing.T) {
	f := newFakeOverlay()
	outside := httpHello(t, "outside")
	h := newTestHTTPProxy(t, HTTPProxyConfig{Overlay: f})
	code, body := proxyGet(t, h.Addr(), "http://nosuch.agents.internal:8080/")
	if code != http.StatusBadGateway || !strings.Contains(body, "nosuch") {
		t.Fatalf("unknown name: %d %q", code, body)
	}
	code, body = proxyGet(t, h.Addr(), "http://"+outside+"/")
	if code != http.StatusForbidden || !strings.Contains(body, "outside the overlay") {
		t.Fatalf("outside: %d %q", code, body)
	}
	a := newTestHTTPProxy(t, HTTPProxyConfig{Overlay: f, AllowOutside: true})
	if code, body = proxyGet(t, a.Addr(), "http://"+outside+"/y"); code != 200 || body != "outside path=/y" {
		t.Fatalf("AllowOutside: %d %q", code, body)
	}
	// Origin-form requests are not proxy requests.
	resp, err := http.Get("http://" + h.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("origin-form: %d", resp.StatusCode)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// httpConnect opens a CONNECT tunnel and returns the status and conn.
func httpConnect(t *testing.T, proxy net.Addr, dest string) (int, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxy.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", dest, dest)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
	}
	return resp.StatusCode, c, br
}

func TestHTTPProxyConnect(t *testing.T) {
	f := newFakeOverlay()
	vap := f.addTCP("search", tcpEcho(t))
	h := newTestHTTPProxy(t, HTTPProxyConfig{Overlay: f})
	code, c, br := httpConnect(t, h.Addr(), "search:"+strconv.Itoa(int(vap.Port())))
	if code != 200 {
		t.Fatalf("CONNECT: %d", code)
	}
	c.Write([]byte("through the tunnel"))
	got := make([]byte, len("through the tunnel"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "through the tunnel" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if code, _, _ := httpConnect(t, h.Addr(), "nosuch:80"); code != http.StatusBadGateway {
		t.Fatalf("CONNECT unknown: %d", code)
	}
	if code, _, _ := httpConnect(t, h.Addr(), "127.0.0.1:"+strconv.Itoa(int(vap.Port()))); code != http.StatusForbidden {
		t.Fatalf("CONNECT outside: %d", code)
	}
	// Overlay IP, not in the fake's tables: dial fails → 502.
	if code, _, _ := httpConnect(t, h.Addr(), netip.MustParseAddr("100.96.9.9").String()+":1"); code != http.StatusBadGateway {
		t.Fatalf("CONNECT refused: %d", code)
	}
}

func TestCurlHTTPProxy(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	f := newFakeOverlay()
	vap := f.addTCP("search", httpHello(t, "hello from search"))
	h := newTestHTTPProxy(t, HTTPProxyConfig{Overlay: f})
	u := "http://search.agents.internal:" + strconv.Itoa(int(vap.Port())) + "/c"
	for _, extra := range [][]string{nil, {"--proxytunnel"}} {
		args := append([]string{"-sS", "--max-time", "10", "-x", "http://" + h.Addr().String()}, extra...)
		out, err := exec.Command(curl, append(args, u)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v: %s", extra, err, out)
		}
		if string(out) != "hello from search path=/c" {
			t.Fatalf("curl %v: %q", extra, out)
		}
	}
}
