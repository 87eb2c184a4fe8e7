package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentnet/agentnet/internal/logtest"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness is one coordinator on 127.0.0.1:0 with a real bbolt file.
type harness struct {
	t     *testing.T
	c     *Coordinator
	cfg   Config
	logs  *logtest.Buffer
	admin *adminclient.Client
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	logs := &logtest.Buffer{}
	cfg := Config{
		DataDir: t.TempDir(),
		Listen:  "127.0.0.1:0",
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	admin := adminclient.New(c.AdminCred())
	if ln, ok := cfg.listener.(*pipeListener); ok {
		admin = adminclient.NewDial(c.AdminCred(), ln.dialContext)
	}
	return &harness{t: t, c: c, cfg: cfg, logs: logs, admin: admin}
}

// newPipeHarness is newHarness on an in-memory listener (pipeListener):
// called inside a synctest bubble, the coordinator's tickers and timeouts
// (expiry sweeper, keepalives, write timeouts) and its clock run on the
// bubble's fake time, and testNodes and the admin client dial it in memory.
func newPipeHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	return newHarness(t, func(c *Config) {
		c.Listen = ""
		c.listener = newPipeListener()
		if mod != nil {
			mod(c)
		}
	})
}

func (h *harness) token(req wire.CreateTokenRequest) string {
	h.t.Helper()
	resp, err := h.admin.CreateToken(context.Background(), req)
	if err != nil {
		h.t.Fatalf("CreateToken: %v", err)
	}
	return resp.Token
}

// waitStats waits up to a second for the coordinator's counters to satisfy
// ok: a message is counted once its write returns, which may be just after
// the client has read it.
func (h *harness) waitStats(what string, ok func(Stats) bool) {
	h.t.Helper()
	deadline := time.Now().Add(time.Second)
	for st := h.c.Stats(); !ok(st); st = h.c.Stats() {
		if time.Now().After(deadline) {
			h.t.Fatalf("stats: not %s within 1s: %+v", what, st)
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *harness) nodeCount() int {
	h.t.Helper()
	nodes, err := h.admin.Nodes(context.Background())
	if err != nil {
		h.t.Fatalf("Nodes: %v", err)
	}
	return len(nodes)
}

// testNode is a minimal node-side control client: it signs requests with
// its identity key and trusts the coordinator by pin.
type testNode struct {
	t    *testing.T
	key  ed25519.PrivateKey
	did  string
	wg   string
	url  string
	hc   *http.Client
	now  func() time.Time
	self wire.Node
}

func newTestNode(t *testing.T, c *Coordinator) *testNode {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	var wg [32]byte
	rand.Read(wg[:])
	tr := &http.Transport{TLSClientConfig: wire.PinnedTLSConfig(c.Pin())}
	if ln, ok := c.cfg.listener.(*pipeListener); ok {
		tr.DialContext = ln.dialContext
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &testNode{
		t:   t,
		key: key,
		did: wire.DID(key.Public().(ed25519.PublicKey)),
		wg:  wire.WGKeyString(wg),
		url: c.URL(),
		hc:  &http.Client{Transport: tr},
		now: c.now,
	}
}

// request builds a signed request; mod may tamper with it after signing.
func (n *testNode) request(method, path string, body []byte, mod func(*http.Request)) *http.Request {
	r, err := http.NewRequest(method, n.url+path, bytes.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	r.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	wire.SignRequest(r, n.key, body, n.now())
	if mod != nil {
		mod(r)
	}
	return r
}

// do sends a request and returns status and body; a non-2xx body is
// decoded into the returned ErrorResponse.
func (n *testNode) do(method, path string, body []byte, mod func(*http.Request)) (int, []byte, wire.ErrorResponse) {
	n.t.Helper()
	resp, err := n.hc.Do(n.request(method, path, body, mod))
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if got := resp.Header.Get(wire.HeaderProtocol); got != strconv.Itoa(wire.ProtocolVersion) {
		n.t.Errorf("%s %s: response %s header = %q", method, path, wire.HeaderProtocol, got)
	}
	var er wire.ErrorResponse
	if resp.StatusCode/100 != 2 {
		if err := json.Unmarshal(b, &er); err != nil {
			n.t.Errorf("%s %s: error body is not ErrorResponse JSON: %q", method, path, b)
		}
	}
	return resp.StatusCode, b, er
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tryEnroll enrolls and returns the response or the refusal.
func (n *testNode) tryEnroll(token, name string) (wire.EnrollResponse, int, wire.ErrorResponse) {
	n.t.Helper()
	req := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, Token: token, Name: name, WGKey: n.wg,
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:41641")}}
	status, b, er := n.do(http.MethodPost, wire.PathEnroll, mustJSON(n.t, req), nil)
	var resp wire.EnrollResponse
	if status == http.StatusOK {
		if err := json.Unmarshal(b, &resp); err != nil {
			n.t.Fatalf("decode EnrollResponse: %v", err)
		}
		n.self = resp.Node
	}
	return resp, status, er
}

func (n *testNode) enroll(token, name string) wire.EnrollResponse {
	n.t.Helper()
	resp, status, er := n.tryEnroll(token, name)
	if status != http.StatusOK {
		n.t.Fatalf("enroll %s: %d %s: %s", name, status, er.Code, er.Error)
	}
	return resp
}

func (n *testNode) update(eps ...netip.AddrPort) *wire.Map {
	n.t.Helper()
	status, b, er := n.do(http.MethodPost, wire.PathUpdate, mustJSON(n.t, wire.UpdateRequest{WGKey: n.wg, Endpoints: eps}), nil)
	if status != http.StatusOK {
		n.t.Fatalf("update: %d %s: %s", status, er.Code, er.Error)
	}
	var s wire.Signed
	if err := json.Unmarshal(b, &s); err != nil {
		n.t.Fatal(err)
	}
	return verify(n.t, &s, nil)
}

// verify checks a signed map against key (if non-nil) or just decodes it.
func verify(t *testing.T, s *wire.Signed, key ed25519.PublicKey) *wire.Map {
	t.Helper()
	if key == nil {
		var m wire.Map
		if err := json.Unmarshal(s.Payload, &m); err != nil {
			t.Fatal(err)
		}
		return &m
	}
	m, err := s.Verify(key)
	if err != nil {
		t.Fatalf("map does not verify: %v", err)
	}
	return m
}

// testStream reads a netmap stream in a goroutine owned by close.
type testStream struct {
	t    *testing.T
	key  ed25519.PublicKey
	resp *http.Response
	msgs chan wire.StreamMessage
	done chan struct{}
	once sync.Once
	// cur is the map the stream has built (waitMap): its last whole map
	// with the deltas since applied; maps and deltas count what came.
	cur          *wire.Map
	maps, deltas int
}

func (n *testNode) openStream(key ed25519.PublicKey) *testStream {
	n.t.Helper()
	return n.openStreamWith(key, nil)
}

// openDeltaStream opens a stream asking for deltas after the first map.
func (n *testNode) openDeltaStream(key ed25519.PublicKey) *testStream {
	n.t.Helper()
	return n.openStreamWith(key, func(r *http.Request) { r.Header.Set(wire.HeaderStreamDeltas, "1") })
}

func (n *testNode) openStreamWith(key ed25519.PublicKey, mod func(*http.Request)) *testStream {
	n.t.Helper()
	resp, err := n.hc.Do(n.request(http.MethodGet, wire.PathStream, nil, mod))
	if err != nil {
		n.t.Fatalf("open stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		n.t.Fatalf("open stream: %d %s", resp.StatusCode, b)
	}
	s := &testStream{t: n.t, key: key, resp: resp, msgs: make(chan wire.StreamMessage, 256), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.msgs)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), wire.MaxStreamLine)
		for sc.Scan() {
			var m wire.StreamMessage
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				return
			}
			s.msgs <- m
		}
	}()
	n.t.Cleanup(s.close)
	return s
}

func (s *testStream) close() {
	s.once.Do(func() { s.resp.Body.Close() })
	<-s.done
}

// waitMap returns the first map satisfying ok within d, failing otherwise.
func (s *testStream) waitMap(d time.Duration, what string, ok func(*wire.Map) bool) *wire.Map {
	s.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case msg, open := <-s.msgs:
			if !open {
				s.t.Fatalf("stream ended while waiting for %s", what)
			}
			switch msg.Type {
			case wire.MsgMap:
				s.cur = verify(s.t, msg.Map, s.key)
				s.maps++
			case wire.MsgDelta:
				if s.cur == nil {
					s.t.Fatal("delta before the first map")
				}
				d, err := msg.Delta.VerifyDelta(s.key)
				if err != nil {
					s.t.Fatalf("delta does not verify: %v", err)
				}
				if s.cur, err = s.cur.Apply(d); err != nil {
					s.t.Fatalf("delta does not apply: %v", err)
				}
				s.deltas++
			default:
				continue
			}
			if ok(s.cur) {
				return s.cur
			}
		case <-timeout:
			s.t.Fatalf("no map with %s within %v", what, d)
			return nil
		}
	}
}

// waitEnd waits for the server to end the stream.
func (s *testStream) waitEnd(d time.Duration) {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(d):
		s.t.Fatalf("stream still open after %v", d)
	}
}

func peerNames(m *wire.Map) string {
	var names []string
	for _, p := range m.Peers {
		names = append(names, p.Name)
	}
	return strings.Join(names, ",")
}

func readCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

func itoa(i int) string { return strconv.Itoa(i) }
