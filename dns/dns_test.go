package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testRecords = []Record{
	{Name: "alice", IPv4: netip.MustParseAddr("100.96.0.1"), IPv6: netip.MustParseAddr("fd7a:115c:a1e0::1")},
	{Name: "bob", IPv4: netip.MustParseAddr("100.96.0.2")}, // no IPv6
	{Name: "Carol-2", IPv6: netip.MustParseAddr("fd7a:115c:a1e0::3")},
}

var transports = []string{"udp", "tcp"}

// startServer serves testRecords on 127.0.0.1:0 until the test ends.
func startServer(tb testing.TB, upstream string) (*Server, string) {
	tb.Helper()
	s := New(Config{Upstream: upstream})
	s.SetRecords(testRecords)
	ap, err := s.ListenAndServe("127.0.0.1:0")
	if err != nil {
		tb.Fatalf("ListenAndServe: %v", err)
	}
	if !ap.Addr().IsLoopback() || ap.Port() == 0 {
		tb.Fatalf("ListenAndServe bound %v", ap)
	}
	tb.Cleanup(func() { s.Close() })
	return s, ap.String()
}

func query(tb testing.TB, transport, addr, name string, qtype uint16) *mdns.Msg {
	tb.Helper()
	c := &mdns.Client{Net: transport, Timeout: 5 * time.Second}
	m := new(mdns.Msg).SetQuestion(name, qtype)
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		tb.Fatalf("%s query %s %s: %v", transport, name, mdns.TypeToString[qtype], err)
	}
	if resp.Id != m.Id {
		tb.Fatalf("response id %d, want %d", resp.Id, m.Id)
	}
	return resp
}

// rdata returns the answers as "TYPE value" strings.
func rdata(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		f := strings.SplitN(rr.String(), "\t", 5)
		out = append(out, f[3]+" "+f[4])
	}
	return out
}

type queryCase struct {
	name    string
	qname   string
	qtype   uint16
	rcode   int
	answers []string // "TYPE rdata"; owners must equal qname
	aa      bool
	soaInNs bool
}

func checkResponse(t *testing.T, resp *mdns.Msg, tc queryCase) {
	t.Helper()
	if resp.Rcode != tc.rcode {
		t.Fatalf("rcode %s, want %s", mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[tc.rcode])
	}
	if got := rdata(resp.Answer); fmt.Sprint(got) != fmt.Sprint(tc.answers) {
		t.Fatalf("answers %q, want %q", got, tc.answers)
	}
	if resp.Authoritative != tc.aa {
		t.Errorf("AA = %v, want %v", resp.Authoritative, tc.aa)
	}
	hasSOA := len(resp.Ns) == 1 && resp.Ns[0].Header().Rrtype == mdns.TypeSOA
	if hasSOA != tc.soaInNs {
		t.Errorf("authority %v, want SOA: %v", resp.Ns, tc.soaInNs)
	}
	for _, rr := range resp.Answer {
		if tc.aa && rr.Header().Ttl != ttl { // forwarded answers keep upstream TTLs
			t.Errorf("TTL %d, want %d", rr.Header().Ttl, ttl)
		}
		if rr.Header().Name != tc.qname {
			t.Errorf("answer owner %q, want the query name %q", rr.Header().Name, tc.qname)
		}
	}
}

func TestQueries(t *testing.T) {
	v6rev, err := mdns.ReverseAddr("fd7a:115c:a1e0::1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []queryCase{
		{name: "A", qname: "alice.agents.internal.", qtype: mdns.TypeA, answers: []string{"A 100.96.0.1"}, aa: true},
		{name: "AAAA", qname: "alice.agents.internal.", qtype: mdns.TypeAAAA, answers: []string{"AAAA fd7a:115c:a1e0::1"}, aa: true},
		{name: "bare name A", qname: "alice.", qtype: mdns.TypeA, answers: []string{"A 100.96.0.1"}, aa: true},
		{name: "bare name AAAA", qname: "carol-2.", qtype: mdns.TypeAAAA, answers: []string{"AAAA fd7a:115c:a1e0::3"}, aa: true},
		{name: "case-insensitive", qname: "ALICE.Agents.INTERNAL.", qtype: mdns.TypeA, answers: []string{"A 100.96.0.1"}, aa: true},
		{name: "record name lowercased", qname: "carol-2.agents.internal.", qtype: mdns.TypeAAAA, answers: []string{"AAAA fd7a:115c:a1e0::3"}, aa: true},
		{name: "ANY", qname: "alice.agents.internal.", qtype: mdns.TypeANY, answers: []string{"A 100.96.0.1", "AAAA fd7a:115c:a1e0::1"}, aa: true},
		{name: "PTR v4", qname: "1.0.96.100.in-addr.arpa.", qtype: mdns.TypePTR, answers: []string{"PTR alice.agents.internal."}, aa: true},
		{name: "PTR v6", qname: v6rev, qtype: mdns.TypePTR, answers: []string{"PTR alice.agents.internal."}, aa: true},
		{name: "PTR v4 uppercase", qname: "2.0.96.100.IN-ADDR.ARPA.", qtype: mdns.TypePTR, answers: []string{"PTR bob.agents.internal."}, aa: true},
		{name: "NODATA AAAA", qname: "bob.agents.internal.", qtype: mdns.TypeAAAA, aa: true, soaInNs: true},
		{name: "NODATA A", qname: "carol-2.agents.internal.", qtype: mdns.TypeA, aa: true, soaInNs: true},
		{name: "NODATA MX", qname: "alice.agents.internal.", qtype: mdns.TypeMX, aa: true, soaInNs: true},
		{name: "apex SOA", qname: "agents.internal.", qtype: mdns.TypeSOA, answers: []string{"SOA ns.agents.internal. hostmaster.agents.internal. 1 3600 600 86400 5"}, aa: true},
		{name: "apex A", qname: "agents.internal.", qtype: mdns.TypeA, aa: true, soaInNs: true},
		{name: "NXDOMAIN", qname: "mallory.agents.internal.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, aa: true, soaInNs: true},
		{name: "NXDOMAIN below a name", qname: "x.alice.agents.internal.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, aa: true, soaInNs: true},
		{name: "REFUSED outside domain", qname: "example.com.", qtype: mdns.TypeA, rcode: mdns.RcodeRefused},
		{name: "REFUSED unknown bare", qname: "mallory.", qtype: mdns.TypeA, rcode: mdns.RcodeRefused},
		{name: "REFUSED unknown reverse", qname: "9.9.9.9.in-addr.arpa.", qtype: mdns.TypePTR, rcode: mdns.RcodeRefused},
		{name: "REFUSED root", qname: ".", qtype: mdns.TypeNS, rcode: mdns.RcodeRefused},
	}
	_, addr := startServer(t, "")
	for _, transport := range transports {
		for _, tc := range tests {
			t.Run(transport+"/"+tc.name, func(t *testing.T) {
				checkResponse(t, query(t, transport, addr, tc.qname, tc.qtype), tc)
			})
		}
	}
}

// fakeUpstream is a second miekg server on 127.0.0.1 (UDP and TCP on one
// port) that answers every A query with 203.0.113.7 and records the
// transport each query arrived on.
type fakeUpstream struct {
	addr string
	mu   sync.Mutex
	seen []string // "transport name"
}

func startUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		u.mu.Lock()
		u.seen = append(u.seen, w.RemoteAddr().Network()+" "+req.Question[0].Name)
		u.mu.Unlock()
		m := new(mdns.Msg).SetReply(req)
		m.RecursionAvailable = true
		m.Answer = append(m.Answer, &mdns.A{
			Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60},
			A:   net.IPv4(203, 0, 113, 7),
		})
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	l, err := net.Listen("tcp", u.addr)
	if err != nil {
		pc.Close()
		t.Skipf("TCP port of %s taken: %v", u.addr, err)
	}
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() { defer close(done); srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { srv.Shutdown(); <-done })
	}
	return u
}

func TestForwarding(t *testing.T) {
	up := startUpstream(t)
	s, addr := startServer(t, up.addr)
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			resp := query(t, transport, addr, "Example.COM.", mdns.TypeA)
			checkResponse(t, resp, queryCase{qname: "Example.COM.", answers: []string{"A 203.0.113.7"}})
			// Our own names are still ours with an upstream.
			checkResponse(t, query(t, transport, addr, "alice.agents.internal.", mdns.TypeA),
				queryCase{qname: "alice.agents.internal.", answers: []string{"A 100.96.0.1"}, aa: true})
		})
	}
	up.mu.Lock()
	seen := fmt.Sprint(up.seen)
	up.mu.Unlock()
	if want := "[udp Example.COM. tcp Example.COM.]"; seen != want {
		t.Errorf("upstream saw %s, want %s (same transport as the query)", seen, want)
	}
	if st := s.Stats(); st.Forwarded != 2 || st.Answer != 2 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestForwardingUpstreamDown(t *testing.T) {
	// A port nobody listens on: UDP gets ICMP port unreachable, TCP a reset.
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.LocalAddr().String()
	l.Close()
	s, addr := startServer(t, dead)
	for _, transport := range transports {
		resp := query(t, transport, addr, "example.com.", mdns.TypeA)
		if resp.Rcode != mdns.RcodeServerFailure {
			t.Errorf("%s: rcode %s, want SERVFAIL", transport, mdns.RcodeToString[resp.Rcode])
		}
	}
	if st := s.Stats(); st.ServFail != 2 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestSetRecordsVisibleOnNextQuery(t *testing.T) {
	s, addr := startServer(t, "")
	for _, transport := range transports {
		s.SetRecords(testRecords)
		if r := query(t, transport, addr, "dave.agents.internal.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("%s: dave before update: %s", transport, mdns.RcodeToString[r.Rcode])
		}
		s.SetRecords([]Record{{Name: "dave", IPv4: netip.MustParseAddr("100.96.0.4")}})
		checkResponse(t, query(t, transport, addr, "dave.agents.internal.", mdns.TypeA),
			queryCase{qname: "dave.agents.internal.", answers: []string{"A 100.96.0.4"}, aa: true})
		if r := query(t, transport, addr, "alice.agents.internal.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("%s: alice after update: %s", transport, mdns.RcodeToString[r.Rcode])
		}
		if r := query(t, transport, addr, "1.0.96.100.in-addr.arpa.", mdns.TypePTR); r.Rcode != mdns.RcodeRefused {
			t.Fatalf("%s: alice's PTR after update: %s", transport, mdns.RcodeToString[r.Rcode])
		}
	}
}

func TestLookup(t *testing.T) {
	s := New(Config{Domain: "Corp.Example."})
	s.SetRecords(append(testRecords, Record{Name: "bad.name", IPv4: netip.MustParseAddr("100.96.0.9")}, Record{Name: ""}))
	tests := []struct {
		in   string
		want string // record name, "" for not found
	}{
		{"alice", "alice"},
		{"ALICE", "alice"},
		{"alice.", "alice"},
		{"alice.corp.example", "alice"},
		{"Alice.Corp.Example.", "alice"},
		{"carol-2", "carol-2"},
		{"alice.agents.internal", ""},
		{"x.alice.corp.example", ""},
		{"bad.name", ""},
		{"bad", ""},
		{"", ""},
		{".", ""},
		{"corp.example", ""},
	}
	for _, tt := range tests {
		r, ok := s.Lookup(tt.in)
		if ok != (tt.want != "") || r.Name != tt.want {
			t.Errorf("Lookup(%q) = %+v, %v; want %q", tt.in, r, ok, tt.want)
		}
	}
}

func TestParseReverse(t *testing.T) {
	v6, _ := mdns.ReverseAddr("2001:db8::abcd")
	tests := []struct {
		in   string
		want string // "" for not a reverse name
	}{
		{"4.3.2.1.in-addr.arpa.", "1.2.3.4"},
		{"255.0.0.10.in-addr.arpa.", "10.0.0.255"},
		{v6, "2001:db8::abcd"},
		{"3.2.1.in-addr.arpa.", ""},
		{"5.4.3.2.1.in-addr.arpa.", ""},
		{"256.3.2.1.in-addr.arpa.", ""},
		{"01.3.2.1.in-addr.arpa.", ""},
		{"a.3.2.1.in-addr.arpa.", ""},
		{".3.2.1.in-addr.arpa.", ""},
		{"1.ip6.arpa.", ""},
		{strings.Replace(v6, "d", "g", 1), ""},
		{strings.Replace(v6, ".", "x", 1), ""},
		{"in-addr.arpa.", ""},
		{"example.com.", ""},
	}
	for _, tt := range tests {
		ip, ok := parseReverse(tt.in)
		got := ""
		if ok {
			got = ip.String()
		}
		if got != tt.want {
			t.Errorf("parseReverse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestGarbagePackets(t *testing.T) {
	s, addr := startServer(t, "")
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	valid, _ := new(mdns.Msg).SetQuestion("alice.agents.internal.", mdns.TypeA).Pack()
	twoQuestions := new(mdns.Msg).SetQuestion("alice.agents.internal.", mdns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	two, _ := twoQuestions.Pack()
	garbage := [][]byte{
		{}, {0}, make([]byte, 11), make([]byte, 12), valid[:20], valid[:len(valid)-1],
		append(append([]byte{}, valid...), 0xff, 0xff), two,
		[]byte(strings.Repeat("\xff", 600)), []byte("GET / HTTP/1.1\r\n\r\n"),
	}
	for _, g := range garbage {
		c.Write(g)
	}
	// TCP: a bogus length prefix, then hang up.
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{0xff, 0xff, 1, 2, 3})
	tc.Close()
	for _, transport := range transports {
		checkResponse(t, query(t, transport, addr, "alice.agents.internal.", mdns.TypeA),
			queryCase{qname: "alice.agents.internal.", answers: []string{"A 100.96.0.1"}, aa: true})
	}
	if st := s.Stats(); st.FormErr == 0 {
		t.Errorf("no FORMERR counted for garbage: %+v", st)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	s := New(Config{})
	ap, err := s.ListenAndServe("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Also a second pair through Serve, as the netstack does.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(pc, l); err != nil {
		t.Fatal(err)
	}
	// An idle TCP client holding a connection must not block Close.
	idle, err := net.Dial("tcp", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.ListenAndServe("127.0.0.1:0"); !errors.Is(err, ErrClosed) {
		t.Fatalf("ListenAndServe after Close: %v, want ErrClosed", err)
	}
	c := &mdns.Client{Net: "tcp", Timeout: time.Second}
	if _, _, err := c.Exchange(new(mdns.Msg).SetQuestion("a.", mdns.TypeA), ap.String()); err == nil {
		t.Fatal("query succeeded after Close")
	}
	goleak.VerifyNone(t)
}

func TestServeNeedsAConn(t *testing.T) {
	s := New(Config{})
	defer s.Close()
	if err := s.Serve(nil, nil); err == nil {
		t.Fatal("Serve(nil, nil) succeeded")
	}
}

// recorder is a ResponseWriter that keeps what the handler writes.
type recorder struct {
	msgs []*mdns.Msg
}

func (r *recorder) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr        { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353} }
func (r *recorder) WriteMsg(m *mdns.Msg) error  { r.msgs = append(r.msgs, m); return nil }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}
func (r *recorder) Network() string             { return "udp" }

// FuzzServeDNS feeds raw packets that unpack as DNS messages to the
// handler: it must answer exactly once with a packable message and never
// panic. (Packets that do not unpack never reach the handler; miekg answers
// them, see TestGarbagePackets.)
func FuzzServeDNS(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"alice.agents.internal.", mdns.TypeA}, {"ALICE.", mdns.TypeAAAA}, {"1.0.96.100.in-addr.arpa.", mdns.TypePTR},
		{"x.y.agents.internal.", mdns.TypeTXT}, {"example.com.", mdns.TypeA}, {"agents.internal.", mdns.TypeSOA},
	} {
		b, _ := new(mdns.Msg).SetQuestion(q.name, q.qtype).Pack()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 12))
	s := New(Config{})
	s.SetRecords(testRecords)
	f.Fuzz(func(t *testing.T, data []byte) {
		s.Lookup(string(data))
		parseReverse(strings.ToLower(string(data)))
		req := new(mdns.Msg)
		if err := req.Unpack(data); err != nil {
			return
		}
		w := &recorder{}
		s.serveDNS(w, req)
		if len(w.msgs) != 1 {
			t.Fatalf("handler wrote %d messages", len(w.msgs))
		}
		if _, err := w.msgs[0].Pack(); err != nil {
			t.Fatalf("response does not pack: %v\n%v", err, w.msgs[0])
		}
	})
}

func BenchmarkLookupA(b *testing.B) {
	s, addr := startServer(b, "")
	b.Run("handler", func(b *testing.B) {
		req := new(mdns.Msg).SetQuestion("alice.agents.internal.", mdns.TypeA)
		w := &recorder{}
		b.ReportAllocs()
		for b.Loop() {
			w.msgs = w.msgs[:0]
			s.serveDNS(w, req)
		}
		if len(w.msgs[0].Answer) != 1 {
			b.Fatal("no answer")
		}
	})
	b.Run("Lookup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := s.Lookup("Alice.agents.internal."); !ok {
				b.Fatal("not found")
			}
		}
	})
	b.Run("udp", func(b *testing.B) {
		c := &mdns.Client{Net: "udp", Timeout: 5 * time.Second}
		co, err := c.Dial(addr)
		if err != nil {
			b.Fatal(err)
		}
		defer co.Close()
		req := new(mdns.Msg).SetQuestion("alice.agents.internal.", mdns.TypeA)
		b.ReportAllocs()
		for b.Loop() {
			resp, _, err := c.ExchangeWithConn(req, co)
			if err != nil || len(resp.Answer) != 1 {
				b.Fatal(err)
			}
		}
	})
}
