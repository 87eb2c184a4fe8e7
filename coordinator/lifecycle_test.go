package coordinator

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func TestRestartKeepsState(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last
	dir := t.TempDir()
	c1, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	listen := strings.TrimPrefix(c1.URL(), "https://")
	admin := adminclient.New(c1.AdminCred())
	tok, err := admin.CreateToken(context.Background(), wire.CreateTokenRequest{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	a := newTestNode(t, c1)
	first := a.enroll(tok.Token, "alpha")
	newTestNode(t, c1).enroll(tok.Token, "bravo")
	nodes1, err := admin.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cred1, err := os.ReadFile(c1.AdminCredPath())
	if err != nil {
		t.Fatal(err)
	}
	pin, pub, ula, serial := c1.Pin(), c1.PublicKey(), c1.ula, c1.snap.Load().serial
	if err := c1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	c2, err := New(Config{DataDir: dir, Listen: listen})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer c2.Close()
	if c2.Pin() != pin || !c2.PublicKey().Equal(pub) || c2.ula != ula || c2.URL() != c1.URL() {
		t.Errorf("restart changed pin/key/ULA/URL: %s %x %v %s", c2.Pin(), c2.PublicKey(), c2.ula, c2.URL())
	}
	if c2.snap.Load().serial < serial {
		t.Errorf("serial went back from %d to %d", serial, c2.snap.Load().serial)
	}
	cred2, err := os.ReadFile(c2.AdminCredPath())
	if err != nil || string(cred2) != string(cred1) {
		t.Errorf("admin.cred changed across restart (%v)", err)
	}
	nodes2, err := adminclient.New(c2.AdminCred()).Nodes(context.Background())
	if err != nil {
		t.Fatalf("old admin secret after restart: %v", err)
	}
	if len(nodes2) != len(nodes1) {
		t.Fatalf("nodes %d after restart, want %d", len(nodes2), len(nodes1))
	}
	for i := range nodes1 {
		if nodes1[i].Name != nodes2[i].Name || nodes1[i].IPv4 != nodes2[i].IPv4 || nodes1[i].IPv6 != nodes2[i].IPv6 || nodes1[i].DID != nodes2[i].DID {
			t.Errorf("node %d changed: %+v → %+v", i, nodes1[i], nodes2[i])
		}
	}
	// The node re-enrolls without a token and keeps its addresses; the
	// reusable token still works for a newcomer, who gets the next address.
	a.url = c2.URL()
	if again := a.enroll("", "alpha"); again.Node.IPv4 != first.Node.IPv4 {
		t.Errorf("alpha got %v after restart, want %v", again.Node.IPv4, first.Node.IPv4)
	}
	if got := newTestNode(t, c2).enroll(tok.Token, "charlie").Node.IPv4; got != netip.MustParseAddr("100.96.0.3") {
		t.Errorf("charlie got %v, want 100.96.0.3", got)
	}
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c2.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCloseWithOpenStreams(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	c, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := adminclient.New(c.AdminCred()).CreateToken(context.Background(), wire.CreateTokenRequest{Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	var streams []*testStream
	for _, name := range []string{"a", "b", "c"} {
		n := newTestNode(t, c)
		n.enroll(tok.Token, name)
		s := n.openStream(c.PublicKey())
		s.waitMap(time.Second, "own map", func(m *wire.Map) bool { return m.Self.Name == name })
		streams = append(streams, s)
	}
	if c.Stats().StreamsOpen != 3 {
		t.Fatalf("StreamsOpen = %d, want 3", c.Stats().StreamsOpen)
	}
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with 3 open streams, want < 1s", d)
	}
	for _, s := range streams {
		s.waitEnd(time.Second)
	}
	// Requests after Close fail instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := adminclient.New(c.AdminCred()).Nodes(ctx); err == nil {
		t.Error("admin call after Close succeeded")
	}
}

func TestAdminClientWrongPin(t *testing.T) {
	h := newHarness(t, nil)
	other := newHarness(t, nil)
	cred := h.c.AdminCred()
	cred.Pin = other.c.Pin()
	_, err := adminclient.New(cred).Nodes(context.Background())
	if !errors.Is(err, wire.ErrPinMismatch) {
		t.Fatalf("wrong pin: %v, want ErrPinMismatch", err)
	}
}

// TestAdminCredFile checks that the admin.cred the coordinator writes is
// one wire.LoadAdminCred accepts (the format checks are in wire).
func TestAdminCredFile(t *testing.T) {
	h := newHarness(t, nil)
	got, err := wire.LoadAdminCred(h.c.AdminCredPath())
	if err != nil || got != h.c.AdminCred() {
		t.Fatalf("wire.LoadAdminCred(admin.cred) = %+v, %v; want %+v", got, err, h.c.AdminCred())
	}
}

func TestDataDirPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	c, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for name, want := range map[string]os.FileMode{
		"":          0o700 | os.ModeDir,
		fileCred:    0o600,
		fileTLSKey:  0o600,
		fileSignKey: 0o600,
		fileDB:      0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", filepath.Join(dir, name), fi.Mode(), want)
		}
	}
}

func TestNewConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no data dir", Config{Listen: "127.0.0.1:0"}, "DataDir is required"},
		{"no listen", Config{DataDir: dir}, "Listen is required"},
		{"IPv6 pool", Config{DataDir: dir, Listen: "127.0.0.1:0", Prefix4: netip.MustParsePrefix("fd00::/64")}, "not an IPv4 prefix"},
		{"host bits", Config{DataDir: dir, Listen: "127.0.0.1:0", Prefix4: netip.MustParsePrefix("10.0.0.1/24")}, "host bits"},
		{"http URL", Config{DataDir: dir, Listen: "127.0.0.1:0", URL: "http://127.0.0.1:1"}, "not https"},
		{"bad listen", Config{DataDir: dir, Listen: "256.0.0.1:0"}, "listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestPrefixChangeWithNodesRefused(t *testing.T) {
	h := newHarness(t, nil)
	newTestNode(t, h.c).enroll(h.token(wire.CreateTokenRequest{}), "a")
	h.c.Close()
	_, err := New(Config{DataDir: h.cfg.DataDir, Listen: "127.0.0.1:0", Prefix4: netip.MustParsePrefix("10.0.0.0/16")})
	if err == nil || !strings.Contains(err.Error(), "cannot change") {
		t.Fatalf("New with another Prefix4 = %v, want refusal", err)
	}
}

func TestAdminCredRotation(t *testing.T) {
	h := newHarness(t, nil)
	old := h.c.AdminCred()
	h.c.Close()
	if err := os.Remove(h.c.AdminCredPath()); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{DataDir: h.cfg.DataDir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.AdminCred().Secret == old.Secret {
		t.Fatal("deleting admin.cred did not rotate the secret")
	}
	old.URL = c.URL()
	var ae *wire.APIError
	if _, err := adminclient.New(old).Nodes(context.Background()); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("old secret after rotation: %v, want 401", err)
	}
	if _, err := adminclient.New(c.AdminCred()).Nodes(context.Background()); err != nil {
		t.Errorf("new secret: %v", err)
	}
}
