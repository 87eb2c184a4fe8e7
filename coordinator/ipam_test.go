package coordinator

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

func TestNextFree(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	tests := []struct {
		name   string
		prefix netip.Prefix
		last   uint32
		taken  []string
		count  int      // allocations to make
		want   []string // addresses in order; empty string = exhausted
	}{
		{"sequential from start", p("100.96.0.0/12"), 0, nil, 3, []string{"100.96.0.1", "100.96.0.2", "100.96.0.3"}},
		{"skips taken", p("100.96.0.0/12"), 0, []string{"100.96.0.1", "100.96.0.3"}, 2, []string{"100.96.0.2", "100.96.0.4"}},
		{"continues after cursor", p("100.96.0.0/12"), 9, nil, 1, []string{"100.96.0.10"}},
		{"skips DNS IP", p("100.100.100.0/24"), 99, nil, 2, []string{"100.100.100.101", "100.100.100.102"}},
		{"skips broadcast and network, wraps", p("10.0.0.0/29"), 5, nil, 3, []string{"10.0.0.6", "10.0.0.1", "10.0.0.2"}},
		{"exhausts tiny prefix", p("10.0.0.0/30"), 0, nil, 3, []string{"10.0.0.1", "10.0.0.2", ""}},
		{"exhausted when all taken", p("10.0.0.0/30"), 0, []string{"10.0.0.1", "10.0.0.2"}, 1, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used := map[netip.Addr]bool{}
			for _, s := range tt.taken {
				used[a(s)] = true
			}
			last := tt.last
			for i := range tt.count {
				got, off, err := nextFree(tt.prefix, last, func(x netip.Addr) (bool, error) { return used[x], nil })
				if tt.want[i] == "" {
					if !errors.Is(err, ErrNoAddresses) {
						t.Fatalf("allocation %d: got %v, %v; want ErrNoAddresses", i, got, err)
					}
					continue
				}
				if err != nil || got != a(tt.want[i]) {
					t.Fatalf("allocation %d: got %v, %v; want %s", i, got, err, tt.want[i])
				}
				if got == wire.DefaultDNSIP || addrAt(tt.prefix, off) != got {
					t.Fatalf("allocation %d: offset %d does not match %v", i, off, got)
				}
				used[got] = true
				last = off
			}
		})
	}
}

func TestULATwin(t *testing.T) {
	ula := newULA()
	if ula.Bits() != 48 || ula.Addr().As16()[0] != 0xfd {
		t.Fatalf("newULA = %v, want fdXX:XXXX:XXXX::/48", ula)
	}
	p4 := wire.DefaultPrefix4
	v4 := netip.MustParseAddr("100.97.2.3")
	off := hostOffset(p4, v4)
	v6 := ula6(ula, off)
	if !ula.Contains(v6) || addrAt(p4, off) != v4 {
		t.Fatalf("ula6(%v, %d) = %v; not a twin of %v", ula, off, v6, v4)
	}
}

func TestCheckPrefix4(t *testing.T) {
	for _, tt := range []struct {
		p  string
		ok bool
	}{
		{"100.96.0.0/12", true},
		{"10.0.0.0/30", true},
		{"10.0.0.0/31", false},
		{"10.0.0.1/24", false},
		{"fd00::/48", false},
		{"10.0.0.0/4", false},
	} {
		if err := checkPrefix4(netip.MustParsePrefix(tt.p)); (err == nil) != tt.ok {
			t.Errorf("checkPrefix4(%s) = %v, want ok=%v", tt.p, err, tt.ok)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"agent-1", true},
		{"0abc", true},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"Agent", false},
		{"a.b", false},
		{"a_b", false},
		{string(make([]byte, 64)), false},
		{"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123", true}, // 63
		{"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234", false},
	} {
		if got := validName(tt.name); got != tt.ok {
			t.Errorf("validName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}
