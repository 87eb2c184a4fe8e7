package overlay

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNewValidatesBeforeSideEffects: a bad value fails New before the
// state directory exists or the coordinator is contacted (issue 16 item 6:
// --mtu 100 used to fail after enrollment, a bad token after mkdir).
func TestNewValidatesBeforeSideEffects(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"mtu too small", Config{MTU: 100}, "MTU 100"},
		{"mtu too large", Config{MTU: 70000}, "MTU 70000"},
		{"bad token", Config{Token: "nonsense"}, "join token"},
		{"dns listen", Config{DNSListen: "5301"}, "--dns-listen"},
		{"dns upstream", Config{DNSUpstream: "dns.example:53"}, "--dns-upstream"},
		{"socks5", Config{Frontends: Frontends{SOCKS5: "1080"}}, "--socks5"},
		{"forward", Config{Frontends: Frontends{Forwards: []string{"nope"}}}, "--forward"},
		{"expose", Config{Frontends: Frontends{Exposes: []string{"x=y"}}}, "--expose"},
		{"accept-dns without tun", Config{AcceptDNS: true}, "--accept-dns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			tc.cfg.StateDir = dir
			_, err := New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error naming %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state dir created by a failed New: %v", err)
			}
		})
	}
}

// TestStateLock: one node per state directory (issue 16 item 4). The
// second locker fails at once, naming the holder's PID, and the lock is
// free again after unlock.
func TestStateLock(t *testing.T) {
	dir := t.TempDir()
	l, err := lockState(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockState(dir)
	if !errors.Is(err, ErrStateInUse) || !strings.Contains(err.Error(), "in use by process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second lock: %v", err)
	}
	l.unlock()
	l2, err := lockState(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.unlock()
}

func TestUpstreamFromResolvConf(t *testing.T) {
	self := netip.MustParseAddr("100.100.100.100")
	for _, tc := range []struct{ name, conf, want string }{
		{"first nameserver", "# comment\nsearch lan\nnameserver 192.168.1.1\nnameserver 8.8.8.8\n", "192.168.1.1:53"},
		{"skips ours", "nameserver 100.100.100.100\nnameserver 10.0.0.53\n", "10.0.0.53:53"},
		{"ipv6", "nameserver 2001:db8::53\n", "[2001:db8::53]:53"},
		{"stub resolver kept", "nameserver 127.0.0.53\noptions edns0\n", "127.0.0.53:53"},
		{"only ours", "# written by agentnet\nnameserver 100.100.100.100\nsearch agents.internal\n", ""},
		{"garbage", "nameserver\nnameserver not-an-ip\n", ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := upstreamFromResolvConf([]byte(tc.conf), self); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPriorUpstreamPrefersBackup: after a crash /etc/resolv.conf points at
// us and the state dir holds the original; the original's resolver wins.
func TestPriorUpstreamPrefersBackup(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, resolvConfBackup), []byte("nameserver 9.9.9.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := priorUpstream(dir, netip.MustParseAddr("100.100.100.100")); got != "9.9.9.9:53" {
		t.Errorf("priorUpstream = %q, want the backup's 9.9.9.9:53", got)
	}
}
