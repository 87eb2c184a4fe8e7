package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/agentnet/agentnet/netstack/proxy"
	"github.com/agentnet/agentnet/wire"
)

// Validate checks every Config value that can be checked without I/O. New
// calls it before its first side effect (the state directory, enrollment),
// so a bad value leaves nothing behind: no empty state directory, no node
// enrolled under a name whose run then fails. Callers that want to tell a
// usage error from a failure (the CLI) call it first.
func (c *Config) Validate() error {
	if c.MTU != 0 && (c.MTU < minMTU || c.MTU > maxMTU) {
		return fmt.Errorf("overlay: MTU %d out of range: want %d to %d (--mtu)", c.MTU, minMTU, maxMTU)
	}
	if c.Token != "" {
		if _, err := wire.ParseToken(c.Token); err != nil {
			return fmt.Errorf("overlay: %w", err)
		}
	}
	for _, l := range []struct{ flag, addr string }{
		{"--dns-listen", c.DNSListen}, {"--metrics-listen", c.MetricsListen},
		{"--socks5", c.Frontends.SOCKS5}, {"--http-proxy", c.Frontends.HTTPProxy},
	} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			return fmt.Errorf("overlay: %s %q: want host:port, e.g. 127.0.0.1:1080: %v", l.flag, l.addr, err)
		}
	}
	if c.DNSUpstream != "" {
		if _, err := netip.ParseAddrPort(c.DNSUpstream); err != nil {
			return fmt.Errorf("overlay: --dns-upstream %q: want ip:port, e.g. 1.1.1.1:53", c.DNSUpstream)
		}
	}
	if c.AcceptDNS && c.TUN == "" {
		return errors.New("overlay: --accept-dns needs kernel TUN mode (--tun); in netstack mode point resolvers at --dns-listen")
	}
	for _, f := range c.Frontends.Forwards {
		if _, err := proxy.ParseForward(f); err != nil {
			return fmt.Errorf("overlay: --forward %q: %w", f, err)
		}
	}
	for _, e := range c.Frontends.Exposes {
		if _, err := proxy.ParseExpose(e); err != nil {
			return fmt.Errorf("overlay: --expose %q: %w", e, err)
		}
	}
	return nil
}
