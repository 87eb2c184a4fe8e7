package overlay_test

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// TestOneUseAndExpiredTokens: the node reports the coordinator's refusal
// clearly and nothing is enrolled.
func TestOneUseAndExpiredTokens(t *testing.T) {
	clock := clocktest.New(time.Now())
	n := testnet.NewWith(t, func(c *coordinator.Config) { c.Now = clock.Now })
	admin := adminclient.New(n.Coord.AdminCred())
	once, err := admin.CreateToken(ctxT(t, 5*time.Second), wire.CreateTokenRequest{TTLSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	short, err := admin.CreateToken(ctxT(t, 5*time.Second), wire.CreateTokenRequest{TTLSeconds: 1, Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := n.NodeConfig("first")
	cfg.Token = once.Token
	n.StartNodeConfig(cfg)

	cfg = n.NodeConfig("second")
	cfg.Token = once.Token
	_, err = overlay.New(ctxT(t, 5*time.Second), cfg)
	var ce *overlay.ControlError
	if !errors.As(err, &ce) || ce.Resp.Code != wire.CodeTokenUsed {
		t.Fatalf("reused one-use token: %v, want code %s", err, wire.CodeTokenUsed)
	}
	t.Logf("reused: %v", err)

	clock.Add(time.Second) // the short token's TTL
	cfg = n.NodeConfig("third")
	cfg.Token = short.Token
	_, err = overlay.New(ctxT(t, 5*time.Second), cfg)
	if !errors.As(err, &ce) || ce.Resp.Code != wire.CodeTokenExpired {
		t.Fatalf("expired token: %v, want code %s", err, wire.CodeTokenExpired)
	}
	t.Logf("expired: %v", err)

	nodes, err := admin.Nodes(ctxT(t, 5*time.Second))
	if err != nil || len(nodes) != 1 || nodes[0].Name != "first" {
		t.Fatalf("refused enrollments changed the store: %+v %v", nodes, err)
	}
}

// TestVersionMismatch: a coordinator speaking another protocol version is
// refused at once, with both versions in the error.
func TestVersionMismatch(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.HeaderProtocol, "99")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(wire.ErrorResponse{Code: wire.CodeVersion, Error: "coordinator speaks control protocol 99", ProtocolVersion: 99})
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	defer srv.Close()
	tok := wire.Token{URL: srv.URL, Pin: wire.CertPin(srv.Certificate()), ID: "x", Secret: wire.NewSecret()}
	cfg := overlay.Config{StateDir: filepath.Join(t.TempDir(), "n"), Token: tok.String(), Name: "alpha",
		ListenAddr: testnet.Loopback, EnrollTimeout: 3 * time.Second, Logger: testnet.Logger(t)}
	start := time.Now()
	_, err := overlay.New(ctxT(t, 10*time.Second), cfg)
	if !errors.Is(err, wire.ErrVersion) || !strings.Contains(err.Error(), "99") || !strings.Contains(err.Error(), "speaks "+strconv.Itoa(wire.ProtocolVersion)) {
		t.Fatalf("version mismatch: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("version mismatch took %v; it must fail at once, not retry", time.Since(start))
	}
	t.Logf("refused: %v", err)
}

// TestLyingCoordinatorMapRefused: a map over the stream that is not signed
// by the enrolled coordinator key is not applied.
func TestLyingCoordinatorMapRefused(t *testing.T) {
	n := testnet.New(t)
	a, b := n.StartNode("alpha"), n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	before := a.Map()

	evil := *before
	evil.Serial += 100
	evil.Peers = append([]wire.Node(nil), before.Peers...)
	evil.Peers[0].IPv4 = evil.Self.IPv4.Next().Next().Next()
	_, key, _ := ed25519.GenerateKey(nil)
	s, err := wire.Sign(key, &evil)
	if err != nil {
		t.Fatal(err)
	}
	a.DeliverMapForTest(s)
	if got := a.Map(); got.Serial != before.Serial || got.Peers[0].IPv4 != before.Peers[0].IPv4 {
		t.Fatalf("node applied a map signed by another key: serial %d → %d", before.Serial, got.Serial)
	}
	if got := a.Status().MapsRefused; got != 1 {
		t.Fatalf("refused maps counted %d, want 1", got)
	}
}
