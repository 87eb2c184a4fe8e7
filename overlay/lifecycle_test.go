package overlay_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func lacksPeer(name string) func(*wire.Map) bool {
	return func(m *wire.Map) bool { _, ok := m.Peer(name); return !ok }
}

// nodeIdentity reads a node's identity key from its state dir.
func nodeIdentity(t *testing.T, dir string) ed25519.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Seed []byte `json:"identity_seed"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(st.Seed)
}

// signedUpdate posts an update signed by key straight to the coordinator
// and returns the HTTP status and refusal.
func signedUpdate(t *testing.T, c *coordinator.Coordinator, key ed25519.PrivateKey, wgKey string) (int, wire.ErrorResponse) {
	t.Helper()
	body, _ := json.Marshal(wire.UpdateRequest{WGKey: wgKey})
	req, err := http.NewRequest(http.MethodPost, c.URL()+wire.PathUpdate, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	wire.SignRequest(req, key, body, time.Now())
	tr := &http.Transport{TLSClientConfig: wire.PinnedTLSConfig(c.Pin())}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var er wire.ErrorResponse
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &er)
	return resp.StatusCode, er
}

// TestRevokeStopsLiveTransfer revokes a node in the middle of a TCP
// transfer: within a second no more data passes, the peer forgets its name,
// the revoked node stops (refused, no peers) and its identity cannot come
// back.
func TestRevokeStopsLiveTransfer(t *testing.T) {
	nw := testnet.New(t)
	a, b := nw.StartNode("alpha"), nw.StartNode("bravo")
	testnet.WaitPeers(t, a, b)

	ln, err := b.Listen("tcp", ":7100")
	if err != nil {
		t.Fatal(err)
	}
	var received atomic.Int64
	var wg sync.WaitGroup
	accepted := make(chan net.Conn, 1)
	defer wg.Wait()
	defer func() {
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
	}()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- c
		buf := make([]byte, 64<<10)
		for {
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	conn, err := a.Dial(ctxT(t, 10*time.Second), "tcp", "bravo:7100")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 16<<10)
		for {
			conn.SetWriteDeadline(time.Now().Add(15 * time.Second))
			if _, err := conn.Write(buf); err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for received.Load() < 1<<20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if received.Load() < 1<<20 {
		t.Fatalf("transfer did not get going: %d bytes", received.Load())
	}

	admin := adminclient.New(nw.Coord.AdminCred())
	start := time.Now()
	if _, err := admin.RevokeNode(ctxT(t, 10*time.Second), "alpha", "test"); err != nil {
		t.Fatalf("RevokeNode: %v", err)
	}
	if _, err := b.WaitMap(ctxT(t, 5*time.Second), lacksPeer("alpha")); err != nil {
		t.Fatal(err)
	}
	t.Logf("bravo dropped alpha %v after the admin call", time.Since(start))
	time.Sleep(time.Until(start.Add(time.Second)))
	at1s := received.Load()
	time.Sleep(time.Second)
	if got := received.Load(); got != at1s {
		t.Errorf("data still passes after revocation: %d bytes between 1 s and 2 s", got-at1s)
	}
	if _, err := b.LookupNode("alpha"); !errors.Is(err, overlay.ErrUnknownName) {
		t.Errorf("bravo still knows alpha: %v", err)
	}
	if ips, err := b.Resolver().LookupNetIP(ctxT(t, 5*time.Second), "ip4", "alpha.agents.internal"); err == nil {
		t.Errorf("alpha still resolves in bravo's DNS: %v", ips)
	}

	// The revoked node hears it on its next contact and stops for good.
	// WaitMap wakes on the refusal too (lifecycle.go): no polling.
	if _, err := a.WaitMap(ctxT(t, 10*time.Second), func(*wire.Map) bool { return a.Refused() != nil }); err != nil {
		t.Fatalf("alpha never heard its revocation: %v", err)
	}
	r := a.Refused()
	if r == nil || r.Code != wire.CodeNodeRevoked || !strings.Contains(r.Error, "new identity") {
		t.Fatalf("alpha's refusal = %+v", r)
	}
	// It stops on its own: Done closes and Err says why (issue 16 item 3).
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("alpha's Done not closed after its revocation")
	}
	if err := a.Err(); !errors.Is(err, overlay.ErrRevoked) || !strings.Contains(err.Error(), "NEWDIR") {
		t.Errorf("alpha.Err() = %v, want one wrapping ErrRevoked", err)
	}
	st := a.Status()
	if st.Refused == nil || len(st.Peers) != 0 || len(a.Map().Peers) != 0 {
		t.Errorf("alpha status after revocation: refused %v, %d peers", st.Refused, len(st.Peers))
	}
	dirA := nw.NodeConfig("alpha").StateDir
	if _, err := os.Stat(filepath.Join(dirA, "wire.json")); !os.IsNotExist(err) {
		t.Errorf("cached map kept after revocation: %v", err)
	}
	a.Close()

	// Restarting from the same state refuses at once.
	_, err = overlay.New(ctxT(t, 10*time.Second), nw.NodeConfig("alpha"))
	if err == nil || !errors.Is(err, overlay.ErrRevoked) || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "NEWDIR") {
		t.Errorf("restart of a revoked node: %v", err)
	}
	// The old identity cannot re-enroll even with a valid token: a state
	// dir with the same identity but no record of the refusal.
	fresh := filepath.Join(nw.Dir, "alpha-again")
	if err := os.MkdirAll(fresh, 0o700); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	b0, _ := os.ReadFile(filepath.Join(dirA, "node.json"))
	if err := json.Unmarshal(b0, &raw); err != nil {
		t.Fatal(err)
	}
	delete(raw, "refused")
	delete(raw, "coordinator_key")
	b1, _ := json.Marshal(raw)
	if err := os.WriteFile(filepath.Join(fresh, "node.json"), b1, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := nw.NodeConfig("alpha")
	cfg.StateDir = fresh
	_, err = overlay.New(ctxT(t, 10*time.Second), cfg)
	if err == nil || !strings.Contains(err.Error(), wire.CodeNodeRevoked) {
		t.Errorf("re-enroll of the revoked identity with a valid token: %v", err)
	}
}

// TestRotateUnderTransfer rotates both nodes' WireGuard keys during a
// checksummed transfer in both directions on one TCP connection.
func TestRotateUnderTransfer(t *testing.T) {
	nw := testnet.New(t)
	a, b := nw.StartNode("alpha"), nw.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	const size = 8 << 20

	ln, err := b.Listen("tcp", ":7200")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Each side writes size bytes of its own PRNG stream and hashes what
	// it reads; the hashes must match the other side's stream.
	stream := func(seed uint64, w io.Writer) ([32]byte, error) {
		h := sha256.New()
		rng := rand.New(rand.NewPCG(seed, seed))
		buf := make([]byte, 32<<10)
		for sent := 0; sent < size; sent += len(buf) {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			h.Write(buf)
			if _, err := w.Write(buf); err != nil {
				return [32]byte{}, err
			}
		}
		return [32]byte(h.Sum(nil)), nil
	}
	type result struct {
		sent, got [32]byte
		n         int64
		maxGap    time.Duration // longest wait for received data
		err       error
	}
	// recv[i] counts what side i has received, so the rotations can wait
	// for data to be flowing instead of sleeping.
	var recv [2]progress
	run := func(c net.Conn, seed uint64, recv *progress, out chan<- result) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(90 * time.Second))
		var r result
		done := make(chan struct{})
		go func() {
			defer close(done)
			h := sha256.New()
			gw := &gapWriter{w: h, last: time.Now(), recv: recv}
			r.n, r.err = io.CopyN(gw, c, size)
			r.got, r.maxGap = [32]byte(h.Sum(nil)), gw.max
		}()
		var werr error
		r.sent, werr = stream(seed, c)
		<-done
		if r.err == nil {
			r.err = werr
		}
		out <- r
	}
	resA, resB := make(chan result, 1), make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			resB <- result{err: err}
			return
		}
		run(c, 2, &recv[1], resB)
	}()
	conn, err := a.Dial(ctxT(t, 10*time.Second), "tcp", "bravo:7200")
	if err != nil {
		t.Fatal(err)
	}
	go run(conn, 1, &recv[0], resA)

	// flowing waits until each side has received more bytes than now (or
	// all of them).
	flowing := func(more int64, what string) {
		t.Helper()
		for i := range recv {
			at := min(recv[i].count()+more, size)
			select {
			case <-recv[i].reached(at):
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: side %d received %d bytes, not %d, within 30s", what, i, recv[i].count(), at)
			}
		}
	}
	oldA, oldB := a.Self().WGKey, b.Self().WGKey
	flowing(1<<20, "mid-transfer")
	start := time.Now()
	fa1, fa2, err := a.RotateKey(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatalf("rotate alpha: %v", err)
	}
	t.Logf("alpha rotated %s → %s in %v", fa1, fa2, time.Since(start))
	flowing(256<<10, "after alpha's rotation") // and before bravo's
	if _, _, err := b.RotateKey(ctxT(t, 30*time.Second)); err != nil {
		t.Fatalf("rotate bravo: %v", err)
	}

	var rs [2]result
	for i, ch := range []chan result{resA, resB} {
		select {
		case rs[i] = <-ch:
			if rs[i].err != nil {
				t.Fatalf("transfer failed across rotation after %d bytes: %v", rs[i].n, rs[i].err)
			}
		case <-time.After(90 * time.Second):
			t.Fatal("transfer did not finish")
		}
	}
	if rs[0].sent != rs[1].got || rs[1].sent != rs[0].got {
		t.Fatalf("checksum mismatch across rotation: alpha→bravo %x/%x, bravo→alpha %x/%x", rs[0].sent, rs[1].got, rs[1].sent, rs[0].got)
	}
	t.Logf("8 MiB each way, checksums equal, across two rotations in %v; longest receive gap alpha %v, bravo %v",
		time.Since(start), rs[0].maxGap, rs[1].maxGap)

	newA := a.Self().WGKey
	if newA == oldA || b.Self().WGKey == oldB {
		t.Fatalf("keys did not change")
	}
	if _, err := b.WaitMap(ctxT(t, 5*time.Second), func(m *wire.Map) bool {
		p, ok := m.Peer("alpha")
		return ok && p.WGKey == newA
	}); err != nil {
		t.Fatal(err)
	}
	// The coordinator refuses the retired key, even from its own identity.
	status, er := signedUpdate(t, nw.Coord, nodeIdentity(t, nw.NodeConfig("alpha").StateDir), oldA)
	if status != http.StatusForbidden || er.Code != wire.CodeKeyRetired {
		t.Errorf("update with the retired key: %d %s %q", status, er.Code, er.Error)
	}
	// A restart keeps the new key.
	a.Close()
	a2 := nw.StartNode("alpha")
	if a2.Self().WGKey != newA {
		t.Errorf("restart came back with key %s, want %s", a2.Self().WGKey, newA)
	}
	echoCheck := func() {
		ln2, err := b.Listen("tcp", ":7201")
		if err != nil {
			t.Fatal(err)
		}
		echoServer(t, ln2)
		echoOnce(t, a2, "bravo:7201", "after restart")
	}
	echoCheck()
}

// gapWriter records the longest time between two writes, and counts
// what it writes into recv if set.
type gapWriter struct {
	w    io.Writer
	last time.Time
	max  time.Duration
	recv *progress
}

func (g *gapWriter) Write(p []byte) (int, error) {
	now := time.Now()
	g.max = max(g.max, now.Sub(g.last))
	g.last = now
	if g.recv != nil {
		g.recv.add(int64(len(p)))
	}
	return g.w.Write(p)
}

// progress is a byte count that wakes waiters at thresholds.
type progress struct {
	mu      sync.Mutex // guards the fields below
	n       int64
	waiters map[int64][]chan struct{}
}

func (p *progress) add(k int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += k
	for at, chs := range p.waiters {
		if at <= p.n {
			for _, ch := range chs {
				close(ch)
			}
			delete(p.waiters, at)
		}
	}
}

func (p *progress) count() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// reached returns a channel closed once the count is at least at.
func (p *progress) reached(at int64) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	if p.n >= at {
		close(ch)
		return ch
	}
	if p.waiters == nil {
		p.waiters = map[int64][]chan struct{}{}
	}
	p.waiters[at] = append(p.waiters[at], ch)
	return ch
}
