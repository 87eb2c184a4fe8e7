package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
)

// ErrForeignDevice is returned by Create and Cleanup when a network device
// with the configured name exists but was not created by this package. The
// device is left alone.
var ErrForeignDevice = errors.New("a network device with this name exists and was not created by agentnet")

// Config for Create. Each field says its default.
type Config struct {
	// Name of the kernel device, e.g. "agentnet0". Required; at most 15
	// bytes, without '/', ':', '%' or white space.
	Name string
	// MTU of the device. Optional, default 1280. Must be at
	// least 1280 when any address or route is IPv6, else at least 576.
	MTU int
	// Addrs are the node's addresses, e.g. 100.96.0.1/32 and fd..::1/128,
	// assigned as given. Required: at least one.
	Addrs []netip.Prefix
	// Routes are the prefixes routed into the device, e.g. 100.96.0.0/12,
	// fd..::/48, 100.100.100.100/32. Optional, default none. Each must be
	// canonical (no bits set past the prefix length). A route equal to the
	// prefix of one of Addrs (e.g. the node's own /32) is skipped: the
	// kernel already routes it.
	Routes []netip.Prefix
	// Logger receives structured logs. Optional, default slog.Default().
	Logger *slog.Logger
}

// plan is a validated Config: what Create will do, in order.
type plan struct {
	name   string
	mtu    int
	addrs  []netip.Prefix
	routes []netip.Prefix // deduplicated, minus those the addresses cover
	log    *slog.Logger
}

// validName reports why name cannot be a Linux interface name
// (dev_valid_name in net/core/dev.c), or "" if it can. '%' is refused too:
// the kernel would treat it as a template and pick another name.
func validName(name string) string {
	switch {
	case name == "":
		return "name is required (e.g. \"agentnet0\")"
	case len(name) > maxNameLen:
		return fmt.Sprintf("name %q is %d bytes; Linux allows at most %d", name, len(name), maxNameLen)
	case name == "." || name == "..":
		return fmt.Sprintf("name %q is reserved", name)
	case strings.ContainsAny(name, "/:%\x00") || strings.ContainsFunc(name, isSpace):
		return fmt.Sprintf("name %q contains '/', ':', '%%', NUL or white space", name)
	}
	return ""
}

func isSpace(r rune) bool { return r == ' ' || (r >= '\t' && r <= '\r') }

// validate checks cfg and applies defaults. Errors name the field and say
// what to change.
func (cfg Config) validate() (plan, error) {
	p := plan{name: cfg.Name, mtu: cfg.MTU, log: cfg.Logger}
	if why := validName(cfg.Name); why != "" {
		return plan{}, fmt.Errorf("tun: invalid Config.Name: %s", why)
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if len(cfg.Addrs) == 0 {
		return plan{}, errors.New("tun: Config.Addrs is empty: give the node's addresses (e.g. 100.96.0.1/32)")
	}
	v6 := false
	seen := make(map[netip.Addr]bool)
	for _, a := range cfg.Addrs {
		if err := checkPrefix("Config.Addrs", a); err != nil {
			return plan{}, err
		}
		if a.Addr().IsUnspecified() || a.Addr().IsMulticast() {
			return plan{}, fmt.Errorf("tun: invalid Config.Addrs entry %s: not a unicast address", a)
		}
		if seen[a.Addr()] {
			return plan{}, fmt.Errorf("tun: Config.Addrs lists %s twice", a.Addr())
		}
		seen[a.Addr()] = true
		v6 = v6 || a.Addr().Is6()
		p.addrs = append(p.addrs, a)
	}
	covered := make(map[netip.Prefix]bool)
	for _, a := range cfg.Addrs {
		covered[a.Masked()] = true
	}
	for _, r := range cfg.Routes {
		if err := checkPrefix("Config.Routes", r); err != nil {
			return plan{}, err
		}
		if r != r.Masked() {
			return plan{}, fmt.Errorf("tun: invalid Config.Routes entry %s: bits set past the prefix length (did you mean %s?)", r, r.Masked())
		}
		v6 = v6 || r.Addr().Is6()
		if covered[r] {
			continue // the kernel's own (local or prefix) route covers it
		}
		covered[r] = true
		p.routes = append(p.routes, r)
	}
	minMTU := minMTUv4
	if v6 {
		minMTU = minMTUv6
	}
	switch {
	case p.mtu == 0:
		p.mtu = defaultMTU
	case p.mtu < minMTU || p.mtu > maxMTU:
		return plan{}, fmt.Errorf("tun: invalid Config.MTU %d: must be between %d and %d (or 0 for %d)", p.mtu, minMTU, maxMTU, defaultMTU)
	}
	return p, nil
}

func checkPrefix(field string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("tun: invalid %s entry %s", field, p)
	case p.Addr().Is4In6():
		return fmt.Errorf("tun: invalid %s entry %s: IPv4-mapped IPv6; write it as IPv4", field, p)
	}
	return nil
}
