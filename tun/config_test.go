package tun

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	v4 := []netip.Prefix{netip.MustParsePrefix("100.96.0.1/32")}
	v46 := append(v4, netip.MustParsePrefix("fd7a:1:2::1/128"))
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"empty name", Config{Addrs: v4}, "name is required"},
		{"name too long", Config{Name: "agentnet0123456789", Addrs: v4}, "at most 15"},
		{"name 15 bytes", Config{Name: "agentnet0123456", Addrs: v4}, ""},
		{"name with slash", Config{Name: "agent/0", Addrs: v4}, "contains"},
		{"name with space", Config{Name: "agent 0", Addrs: v4}, "contains"},
		{"name template", Config{Name: "agent%d", Addrs: v4}, "contains"},
		{"name dot", Config{Name: ".", Addrs: v4}, "reserved"},
		{"no addrs", Config{Name: "agentnet0"}, "Config.Addrs is empty"},
		{"invalid addr", Config{Name: "agentnet0", Addrs: []netip.Prefix{{}}}, "invalid Config.Addrs"},
		{"mapped addr", Config{Name: "agentnet0", Addrs: []netip.Prefix{netip.MustParsePrefix("::ffff:100.96.0.1/128")}}, "IPv4-mapped"},
		{"unspecified addr", Config{Name: "agentnet0", Addrs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32")}}, "not a unicast"},
		{"duplicate addr", Config{Name: "agentnet0", Addrs: append(v4, v4...)}, "twice"},
		{"route not canonical", Config{Name: "agentnet0", Addrs: v4, Routes: []netip.Prefix{netip.MustParsePrefix("100.96.0.1/12")}}, "did you mean 100.96.0.0/12"},
		{"mtu too small v6", Config{Name: "agentnet0", Addrs: v46, MTU: 1200}, "between 1280 and 65535"},
		{"mtu small v4 only", Config{Name: "agentnet0", Addrs: v4, MTU: 1200}, ""},
		{"mtu too big", Config{Name: "agentnet0", Addrs: v4, MTU: 70000}, "between 576 and 65535"},
		{"valid", Config{Name: "agentnet0", Addrs: v46}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate error = %v, want it to contain %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "tun: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestConfigDefaultsAndRoutes(t *testing.T) {
	p, err := Config{
		Name:  "agentnet0",
		Addrs: []netip.Prefix{netip.MustParsePrefix("100.96.0.1/32"), netip.MustParsePrefix("fd7a:1:2::1/64")},
		Routes: []netip.Prefix{
			netip.MustParsePrefix("100.96.0.0/12"),
			netip.MustParsePrefix("100.96.0.1/32"), // the node's own address: skipped
			netip.MustParsePrefix("fd7a:1:2::/64"), // the v6 address's prefix route: skipped
			netip.MustParsePrefix("fd7a:1:2::/48"),
			netip.MustParsePrefix("100.96.0.0/12"), // duplicate: skipped
		},
	}.validate()
	if err != nil {
		t.Fatal(err)
	}
	if p.mtu != 1280 || p.log == nil {
		t.Errorf("defaults: mtu %d, logger %v", p.mtu, p.log)
	}
	want := []netip.Prefix{netip.MustParsePrefix("100.96.0.0/12"), netip.MustParsePrefix("fd7a:1:2::/48")}
	if len(p.routes) != len(want) || p.routes[0] != want[0] || p.routes[1] != want[1] {
		t.Errorf("routes = %v, want %v", p.routes, want)
	}
}
