package dns

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/internal/logtest"
)

var overlayPrefixes = []netip.Prefix{netip.MustParsePrefix("100.96.0.0/12"), netip.MustParsePrefix("fd7a:115c:a1e0::/48")}

// Issue 17, item 13: a kernel-TUN host that forwards IPv4 routed its LAN's
// queries to 100.100.100.100 and the server answered them. Here the
// "underlay" is loopback: a server allowing only the overlay prefixes gets
// real queries from 127.0.0.1 and must answer none of them, not even the
// FORMERR for garbage, count each, and log the source once per interval.
func TestRefusesSourcesOutsideAllow(t *testing.T) {
	log, buf := logtest.Logger()
	clock := clocktest.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	s := New(Config{Allow: overlayPrefixes, Logger: log, Now: clock.Now})
	s.SetRecords(testRecords)
	ap, err := s.ListenAndServe("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	addr := ap.String()

	valid := pack(t, new(mdns.Msg).SetQuestion("alice.agents.internal.", mdns.TypeA))
	for _, transport := range transports {
		for _, raw := range [][]byte{valid, make([]byte, 12), []byte("GET / HTTP/1.1\r\n\r\n")} {
			if resp := exchangeRaw(t, transport, addr, raw, 300*time.Millisecond); resp != nil {
				t.Errorf("%s: refused source got %s", transport, mdns.RcodeToString[resp.Rcode])
			}
		}
	}
	// TCP: the connection is closed without a byte back.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(append([]byte{0, byte(len(valid))}, valid...))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 512)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("TCP from a refused source: read %d bytes, %v; want the connection closed", n, err)
	}
	c.Close()

	st := s.Stats()
	if st.RefusedSource < 7 { // 3 UDP datagrams, 4 TCP connections
		t.Errorf("RefusedSource = %d, want ≥ 7", st.RefusedSource)
	}
	if st.Answer+st.FormErr+st.NXDomain+st.Refused != 0 {
		t.Errorf("refused traffic reached the handler: %+v", st)
	}
	lines := func() int { return strings.Count(buf.String(), "source not allowed") }
	if n := lines(); n != 1 {
		t.Errorf("%d log lines for one source within the interval, want 1:\n%s", n, buf)
	}
	clock.Add(refusedLogInterval + time.Second)
	exchangeRaw(t, "udp", addr, valid, 300*time.Millisecond)
	if n := lines(); n != 2 {
		t.Errorf("%d log lines after the interval, want 2:\n%s", n, buf)
	}
}

// The host listener allows loopback and the overlay; the default is
// loopback only.
func TestAllowLoopback(t *testing.T) {
	for _, allow := range [][]netip.Prefix{nil, append(loopback(), overlayPrefixes...)} {
		s := New(Config{Allow: allow})
		s.SetRecords(testRecords)
		ap, err := s.ListenAndServe("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		for _, transport := range transports {
			checkResponse(t, query(t, transport, ap.String(), "alice.agents.internal.", mdns.TypeA),
				queryCase{qname: "alice.agents.internal.", answers: []string{"A 100.96.0.1"}, aa: true})
		}
		if st := s.Stats(); st.RefusedSource != 0 {
			t.Errorf("Allow %v: RefusedSource = %d", allow, st.RefusedSource)
		}
		s.Close()
	}
}

func TestAdmit(t *testing.T) {
	s := New(Config{Allow: overlayPrefixes, Logger: slog.New(slog.DiscardHandler)})
	defer s.Close()
	udp := func(ip string) net.Addr { return &net.UDPAddr{IP: net.ParseIP(ip), Port: 53} }
	tests := []struct {
		from net.Addr
		want bool
	}{
		{udp("100.96.0.7"), true},
		{udp("::ffff:100.96.0.7"), true}, // a dual-stack socket's view of an IPv4 peer
		{&net.TCPAddr{IP: net.ParseIP("fd7a:115c:a1e0::7"), Port: 1}, true},
		{udp("100.112.0.1"), false}, // just outside 100.96.0.0/12
		{udp("192.168.1.10"), false},
		{udp("127.0.0.1"), false}, // loopback only when allowed
		{udp("::1"), false},
		{&net.TCPAddr{IP: net.ParseIP("fd7a:115c:a1e1::7"), Port: 1}, false},
		{nil, false},
		{&net.UnixAddr{Name: "/x", Net: "unix"}, false},
	}
	for _, tt := range tests {
		if got := s.admit(tt.from); got != tt.want {
			t.Errorf("admit(%v) = %v, want %v", tt.from, got, tt.want)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
