package turncred

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

func TestCredentialsRoundTrip(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	u, p, exp := Credentials(secret, "alpha", time.Hour, now)
	if want := now.Add(time.Hour).Truncate(time.Second); !exp.Equal(want) {
		t.Fatalf("expires %v, want %v", exp, want)
	}
	gotExp, node, err := ParseUsername(u)
	if err != nil || node != "alpha" || !gotExp.Equal(exp) {
		t.Fatalf("ParseUsername(%q) = %v %q %v", u, gotExp, node, err)
	}
	if Password(secret, u) != p || Password([]byte("another secret!!"), u) == p {
		t.Fatal("password is not HMAC(secret, username)")
	}
	for _, bad := range []string{"", "alpha", ":alpha", "123:", "-5:alpha", "0:alpha", "x1:alpha", "1:" + strings.Repeat("a", maxUserLen+1)} {
		if _, _, err := ParseUsername(bad); err == nil {
			t.Errorf("ParseUsername(%q) accepted", bad)
		}
	}
}

func TestCredCheck(t *testing.T) {
	good := Cred{
		Name:   "r1",
		Addrs:  []wire.RelayAddr{{Transport: wire.TransportUDP, Addr: netip.MustParseAddrPort("203.0.113.2:3478")}},
		Secret: make([]byte, MinSecretLen),
	}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Cred){
		"no name":      func(c *Cred) { c.Name = "" },
		"no addrs":     func(c *Cred) { c.Addrs = nil },
		"short secret": func(c *Cred) { c.Secret = c.Secret[:MinSecretLen-1] },
		"unspecified":  func(c *Cred) { c.Addrs[0].Addr = netip.MustParseAddrPort("0.0.0.0:3478") },
		"port 0":       func(c *Cred) { c.Addrs[0].Addr = netip.MustParseAddrPort("203.0.113.2:0") },
		"transport":    func(c *Cred) { c.Addrs[0].Transport = "sctp" },
		"tls, no pin":  func(c *Cred) { c.Addrs[0].Transport = wire.TransportTLS },
	} {
		c := good
		c.Addrs = append([]wire.RelayAddr(nil), good.Addrs...)
		mod(&c)
		if c.Check() == nil {
			t.Errorf("%s: Check accepted %+v", name, c)
		}
	}
	r := good.Relay("alpha", time.Hour, time.Now())
	if r.Name != "r1" || !strings.HasSuffix(r.Username, ":alpha") || r.Password != Password(good.Secret, r.Username) {
		t.Fatalf("Relay: %+v", r)
	}
}
