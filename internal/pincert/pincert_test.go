package pincert

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/wire"
)

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	clock := clocktest.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	cfg := Config{KeyPath: filepath.Join(dir, "tls.key"), CertPath: filepath.Join(dir, "tls.crt"), CommonName: "test", Now: clock.Now}
	cert, pin, err := LoadOrCreate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf == nil || pin != wire.CertPin(cert.Leaf) || cert.Leaf.Subject.CommonName != "test" {
		t.Fatalf("pin %s, leaf %+v", pin, cert.Leaf)
	}
	for _, p := range []string{cfg.KeyPath, cfg.CertPath} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", p, fi.Mode(), err)
		}
	}
	crt, _ := os.ReadFile(cfg.CertPath)

	// Each case changes something and says whether the certificate file
	// must be re-issued; the pin never changes while the key stays.
	for _, c := range []struct {
		name    string
		change  func(*Config)
		reissue bool
	}{
		{"restart", func(*Config) {}, false},
		{"cert deleted", func(c *Config) { os.Remove(c.CertPath) }, true},
		{"cert garbage", func(c *Config) { os.WriteFile(c.CertPath, []byte("junk"), 0o600) }, true},
		{"new name", func(c *Config) {
			c.IPs = []netip.Addr{netip.MustParseAddr("192.0.2.7")}
			c.DNSNames = []string{"relay.example"}
		}, true},
		{"same names", func(*Config) {}, false},
		{"expired", func(*Config) { clock.Add(Validity + time.Hour) }, true},
	} {
		c.change(&cfg)
		got, gotPin, err := LoadOrCreate(cfg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if gotPin != pin {
			t.Fatalf("%s: pin changed %s → %s", c.name, pin, gotPin)
		}
		now, _ := os.ReadFile(cfg.CertPath)
		if reissued := !bytes.Equal(now, crt); reissued != c.reissue {
			t.Fatalf("%s: re-issued %v, want %v", c.name, reissued, c.reissue)
		}
		crt = now
		if len(cfg.DNSNames) > 0 && !slices.Contains(got.Leaf.DNSNames, "relay.example") {
			t.Fatalf("%s: names %v missing", c.name, got.Leaf.DNSNames)
		}
		if clock.Now().After(got.Leaf.NotAfter) || clock.Now().Before(got.Leaf.NotBefore) {
			t.Fatalf("%s: certificate not valid now (%v..%v)", c.name, got.Leaf.NotBefore, got.Leaf.NotAfter)
		}
	}

	// A new key (the old one deleted) is a new pin; a damaged key is an
	// error, never silently replaced.
	os.Remove(cfg.KeyPath)
	_, newPin, err := LoadOrCreate(cfg)
	if err != nil || newPin == pin {
		t.Fatalf("after deleting the key: pin %s (was %s), %v", newPin, pin, err)
	}
	os.WriteFile(cfg.KeyPath, []byte("not a key"), 0o600)
	if _, _, err := LoadOrCreate(cfg); err == nil {
		t.Fatal("a damaged key was accepted")
	}
	if _, _, err := LoadOrCreate(Config{KeyPath: cfg.KeyPath}); err == nil {
		t.Fatal("no CertPath accepted")
	}
}
