package overlay_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// echoServer accepts on ln and echoes every connection until the test ends;
// cleanup closes the listener and every open connection.
func echoServer(t *testing.T, ln net.Listener) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

func echoOnce(t *testing.T, from *overlay.Node, addr, msg string) {
	t.Helper()
	c, err := from.Dial(ctxT(t, 10*time.Second), "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write to %s: %v", addr, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo from %s: %q, %v", addr, buf, err)
	}
}

func TestThreeNodes(t *testing.T) {
	net3 := testnet.New(t)
	a, b, c := net3.StartNode("alpha"), net3.StartNode("bravo"), net3.StartNode("charlie")
	testnet.WaitPeers(t, a, b, c)

	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	for _, addr := range []string{"bravo:7000", "bravo.agents.internal:7000", "BRAVO.agents.internal.:7000", b.Self().IPv4.String() + ":7000", fmt.Sprintf("[%s]:7000", b.Self().IPv6)} {
		echoOnce(t, a, addr, "hello "+addr)
		echoOnce(t, c, addr, "hi "+addr)
	}

	t.Run("32MiB", func(t *testing.T) {
		const size = 32 << 20
		sink, err := c.Listen("tcp", ":7001")
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		got := make(chan [32]byte, 1)
		go func() {
			conn, err := sink.Accept()
			if err != nil {
				got <- [32]byte{}
				return
			}
			defer conn.Close()
			h := sha256.New()
			io.Copy(h, conn)
			var s [32]byte
			copy(s[:], h.Sum(nil))
			got <- s
		}()
		conn, err := a.Dial(ctxT(t, 10*time.Second), "tcp", "charlie:7001")
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 64<<10)
		start := time.Now()
		for sent := 0; sent < size; sent += len(buf) {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			h.Write(buf)
			if _, err := conn.Write(buf); err != nil {
				t.Fatalf("write after %d bytes: %v", sent, err)
			}
		}
		conn.Close()
		var want [32]byte
		copy(want[:], h.Sum(nil))
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("checksum mismatch: sent %x received %x", want, s)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("receiver did not finish")
		}
		t.Logf("32 MiB alpha→charlie in %v (%.0f Mbit/s)", time.Since(start), size*8/time.Since(start).Seconds()/1e6)
	})

	t.Run("DNS", func(t *testing.T) {
		// In the overlay: a real query through WireGuard's local stack.
		ips, err := a.Resolver().LookupNetIP(ctxT(t, 5*time.Second), "ip4", "charlie.agents.internal")
		if err != nil || len(ips) != 1 || ips[0] != c.Self().IPv4 {
			t.Fatalf("overlay resolver: %v %v, want %s", ips, err, c.Self().IPv4)
		}
		if _, err := a.Resolver().LookupNetIP(ctxT(t, 5*time.Second), "ip4", "nobody.agents.internal"); err == nil {
			t.Fatal("unknown name resolved")
		}
	})
}

func TestHostDNS(t *testing.T) {
	n := testnet.New(t)
	cfg := n.NodeConfig("alpha")
	cfg.DNSListen = "127.0.0.1:0"
	a := n.StartNodeConfig(cfg)
	b := n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	addr := a.DNSAddr()
	if !addr.IsValid() {
		t.Fatal("no host DNS address")
	}
	for _, proto := range []string{"udp", "tcp"} {
		cl := &dns.Client{Net: proto, Timeout: 3 * time.Second}
		for _, tc := range []struct {
			name  string
			qtype uint16
			rcode int
			want  string
		}{
			{"bravo.agents.internal.", dns.TypeA, dns.RcodeSuccess, b.Self().IPv4.String()},
			{"bravo.agents.internal.", dns.TypeAAAA, dns.RcodeSuccess, b.Self().IPv6.String()},
			{"bravo.", dns.TypeA, dns.RcodeSuccess, b.Self().IPv4.String()},
			{"ghost.agents.internal.", dns.TypeA, dns.RcodeNameError, ""},
		} {
			q := new(dns.Msg)
			q.SetQuestion(tc.name, tc.qtype)
			r, _, err := cl.Exchange(q, addr.String())
			if err != nil {
				t.Fatalf("%s %s: %v", proto, tc.name, err)
			}
			if r.Rcode != tc.rcode {
				t.Fatalf("%s %s: rcode %s, want %s", proto, tc.name, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			if tc.want != "" && (len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), tc.want)) {
				t.Fatalf("%s %s: answer %v, want %s", proto, tc.name, r.Answer, tc.want)
			}
		}
	}
}

func TestRestartKeepsIdentity(t *testing.T) {
	n := testnet.New(t)
	a := n.StartNode("alpha")
	b := n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	before := a.Self()
	a.Close()

	cfg := n.NodeConfig("alpha")
	cfg.Token = "" // a restart needs no token
	a2 := n.StartNodeConfig(cfg)
	after := a2.Self()
	if after.Name != before.Name || after.IPv4 != before.IPv4 || after.IPv6 != before.IPv6 || after.DID != before.DID {
		t.Fatalf("restart changed identity: %+v → %+v", before, after)
	}
	ln, _ := b.Listen("tcp", ":7000")
	echoServer(t, ln)
	echoOnce(t, a2, "bravo:7000", "after restart")

	// Coordinator restart keeps everything: nodes, addresses, keys.
	pin, key := n.Coord.Pin(), n.Coord.PublicKey()
	n.StopCoordinator()
	n.StartCoordinator()
	if n.Coord.Pin() != pin || !n.Coord.PublicKey().Equal(key) {
		t.Fatal("coordinator restart changed its pin or signing key")
	}
	c := n.StartNode("charlie")
	testnet.WaitPeers(t, a2, b, c)
	if got, _ := c.Map().Peer("alpha"); got.IPv4 != before.IPv4 {
		t.Fatalf("after coordinator restart alpha is %s, want %s", got.IPv4, before.IPv4)
	}
	echoOnce(t, c, "bravo:7000", "new node after coordinator restart")
}

func TestCoordinatorDown(t *testing.T) {
	n := testnet.New(t)
	a, b := n.StartNode("alpha"), n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	ln, _ := b.Listen("tcp", ":7000")
	echoServer(t, ln)

	live, err := a.Dial(ctxT(t, 5*time.Second), "tcp", "bravo:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	n.StopCoordinator()

	// The established stream keeps flowing.
	for i := range 20 {
		msg := fmt.Sprintf("while down %d", i)
		live.SetDeadline(time.Now().Add(5 * time.Second))
		live.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(live, buf); err != nil || string(buf) != msg {
			t.Fatalf("live stream broke with coordinator down: %q %v", buf, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A new connection between existing peers succeeds.
	echoOnce(t, a, "bravo:7000", "new conn while coordinator down")

	// A node restarted while the coordinator is down reaches its peers.
	a.Close()
	cfg := n.NodeConfig("alpha")
	cfg.Token = ""
	a2 := n.StartNodeConfig(cfg)
	if a2.Status().Connected {
		t.Fatal("status claims a coordinator connection while it is down")
	}
	echoOnce(t, a2, "bravo:7000", "restarted from cache")
}

// cachedMapFile is the node's wire.json: a whole signed map and the
// signed deltas applied to it since.
type cachedMapFile struct {
	wire.Signed
	Deltas []*wire.Signed `json:"deltas,omitempty"`
}

func TestCachedMapTamperRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mangle func(c *cachedMapFile, peerIP string)
	}{
		{"tampered payload", func(c *cachedMapFile, peerIP string) {
			// Redirect a peer's address, in the map or the delta that
			// brought the peer: a lying cache.
			parts := append([]*wire.Signed{&c.Signed}, c.Deltas...)
			for _, s := range parts {
				if bytes.Contains(s.Payload, []byte(peerIP)) {
					s.Payload = bytes.Replace(s.Payload, []byte(peerIP), []byte("100.96.9.9"), 1)
					return
				}
			}
			t.Fatalf("no part of the cached map lists %s", peerIP)
		}},
		{"signed by another coordinator", func(c *cachedMapFile, _ string) {
			_, other, _ := ed25519.GenerateKey(nil)
			var m wire.Map
			json.Unmarshal(c.Payload, &m)
			resigned, _ := wire.Sign(other, &m)
			c.Signed = *resigned
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testnet.New(t)
			a, b := n.StartNode("alpha"), n.StartNode("bravo")
			testnet.WaitPeers(t, a, b)
			a.Close()
			n.StopCoordinator()

			path := filepath.Join(n.Dir, "alpha", "wire.json")
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var c cachedMapFile
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			tc.mangle(&c, b.Self().IPv4.String())
			raw, _ = json.Marshal(c)
			os.WriteFile(path, raw, 0o600)

			cfg := n.NodeConfig("alpha")
			cfg.Token, cfg.EnrollTimeout = "", 500*time.Millisecond
			_, err = overlay.New(ctxT(t, 10*time.Second), cfg)
			if !errors.Is(err, wire.ErrBadSignature) && (err == nil || !strings.Contains(err.Error(), "cached network map refused")) {
				t.Fatalf("node started from a bad cached map, or failed for another reason: %v", err)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
}

func TestBadTokens(t *testing.T) {
	n := testnet.New(t)
	cfg := n.NodeConfig("alpha")
	cases := map[string]string{
		"empty":     "",
		"malformed": "not-a-token",
		"truncated": n.Token[:len(n.Token)-10],
	}
	for name, tok := range cases {
		c := cfg
		c.StateDir = filepath.Join(n.Dir, "bad-"+name)
		c.Token = tok
		if _, err := overlay.New(ctxT(t, 5*time.Second), c); err == nil {
			t.Errorf("%s token accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// Wrong pin: a token for this coordinator URL but another certificate.
	tok, _ := wire.ParseToken(n.Token)
	tok.Pin = wire.PinPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	c := cfg
	c.StateDir, c.Token = filepath.Join(n.Dir, "bad-pin"), tok.String()
	_, err := overlay.New(ctxT(t, 5*time.Second), c)
	if !errors.Is(err, wire.ErrPinMismatch) {
		t.Fatalf("wrong pin: err = %v, want ErrPinMismatch", err)
	}
}

func TestUnknownName(t *testing.T) {
	n := testnet.New(t)
	a := n.StartNode("alpha")
	_, err := a.Dial(ctxT(t, 5*time.Second), "tcp", "nobody:80")
	if !errors.Is(err, overlay.ErrUnknownName) {
		t.Fatalf("dial unknown name: %v", err)
	}
}

func TestManyConnectionsThenClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	n := testnet.New(t)
	a, b := n.StartNode("alpha"), n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	for i := range 500 {
		c, err := a.Dial(ctxT(t, 5*time.Second), "tcp", "bravo:7000")
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		buf := make([]byte, 1)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("conn %d read: %v", i, err)
		}
		c.Close()
	}
	start := time.Now()
	a.Close()
	b.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close of both nodes took %v, want < 1s", d)
	}
	ln.Close()
	wg.Wait()
	n.StopCoordinator()
}
