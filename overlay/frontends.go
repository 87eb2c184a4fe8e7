package overlay

import (
	"fmt"
	"io"

	"github.com/agentnet/agentnet/netstack/proxy"
)

// Frontends are local listeners that carry unmodified programs' traffic
// into the overlay. Each field is optional; the zero value starts none.
type Frontends struct {
	SOCKS5             string   // "127.0.0.1:1080": SOCKS5 CONNECT (socks5h) and UDP ASSOCIATE
	SOCKS5AllowOutside bool     // let SOCKS5 and the HTTP proxy reach non-overlay destinations
	HTTPProxy          string   // "127.0.0.1:8080": HTTP CONNECT and plain proxying by name
	Forwards           []string // "127.0.0.1:9000=search:8080": local listener → peer
	Exposes            []string // "8080" or "80=127.0.0.1:8080": overlay port → local service
}

var _ proxy.Overlay = (*Node)(nil)

// startFrontends starts what f asks for; on error it closes what it started.
func (n *Node) startFrontends(f Frontends) error {
	add := func(c io.Closer, what string, err error) error {
		if err != nil {
			return fmt.Errorf("overlay: %s: %w", what, err)
		}
		n.frontends = append(n.frontends, c)
		return nil
	}
	if f.SOCKS5 != "" {
		s, err := proxy.NewSOCKS5(proxy.SOCKS5Config{Listen: f.SOCKS5, Overlay: n, AllowOutside: f.SOCKS5AllowOutside, Logger: n.log,
			MaxConnsPerSource: n.cfg.MaxConnsPerPeer, MaxConns: n.cfg.MaxConns})
		if err := add(s, "SOCKS5 on "+f.SOCKS5, err); err != nil {
			return err
		}
		n.log.Info("SOCKS5 proxy up", "endpoint", s.Addr())
	}
	if f.HTTPProxy != "" {
		h, err := proxy.NewHTTPProxy(proxy.HTTPProxyConfig{Listen: f.HTTPProxy, Overlay: n, AllowOutside: f.SOCKS5AllowOutside, Logger: n.log,
			MaxConnsPerSource: n.cfg.MaxConnsPerPeer, MaxConns: n.cfg.MaxConns})
		if err := add(h, "HTTP proxy on "+f.HTTPProxy, err); err != nil {
			return err
		}
		n.log.Info("HTTP proxy up", "endpoint", h.Addr())
	}
	for _, spec := range f.Forwards {
		cfg, err := proxy.ParseForward(spec)
		if err != nil {
			return fmt.Errorf("overlay: --forward %q: %w", spec, err)
		}
		cfg.Overlay, cfg.Logger = n, n.log
		cfg.MaxConnsPerSource, cfg.MaxConns = n.cfg.MaxConnsPerPeer, n.cfg.MaxConns
		fw, err := proxy.NewForward(cfg)
		if err := add(fw, "forward "+spec, err); err != nil {
			return err
		}
		n.log.Info("forward up", "endpoint", fw.Addr(), "peer", cfg.Target)
	}
	for _, spec := range f.Exposes {
		cfg, err := proxy.ParseExpose(spec)
		if err != nil {
			return fmt.Errorf("overlay: --expose %q: %w", spec, err)
		}
		cfg.Overlay, cfg.Logger = n, n.log
		cfg.MaxConnsPerSource, cfg.MaxConns = n.cfg.MaxConnsPerPeer, n.cfg.MaxConns
		ex, err := proxy.NewExpose(cfg)
		if err := add(ex, "expose "+spec, err); err != nil {
			return err
		}
		n.log.Info("exposing local service", "port", cfg.Port, "endpoint", cfg.Target)
	}
	return nil
}

// connRefused sums the inbound TCP connections reset over a cap
// (Config.MaxConnsPerPeer, MaxConns) by the netstack's listeners and by
// the front-ends. A connection refused by one is never seen by the other,
// so nothing is counted twice.
func (n *Node) connRefused() (perSource, total uint64) {
	if p, ok := n.plane.(netstackPlane); ok {
		st := p.Stats()
		perSource, total = st.ConnsRefusedPerSource, st.ConnsRefusedTotal
	}
	for _, f := range n.frontends { // set before metrics start, never changed afterwards
		if cs, ok := f.(interface{ ConnStats() proxy.ConnStats }); ok {
			st := cs.ConnStats()
			perSource += st.RefusedPerSource
			total += st.RefusedTotal
		}
	}
	return perSource, total
}
