package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// ForwardConfig configures NewForward.
type ForwardConfig struct {
	// Listen is the local TCP address, e.g. "127.0.0.1:9000". Required.
	Listen string
	// Target is the overlay destination, "name:port" or
	// "virtual-ip:port", e.g. "search:8080". Required. It is resolved by
	// the node at each connection, so it may appear in the network map
	// later.
	Target string
	// Overlay is the node. Required.
	Overlay Overlay
	// DialTimeout bounds dialing Target. Optional; default
	// DefaultDialTimeout (30 s).
	DialTimeout time.Duration
	// MaxConnsPerSource caps the client connections from one source
	// address open at once; Accept resets (RST) and counts (ConnStats)
	// the ones beyond it. On a loopback listener every local program is
	// the same source. Optional; default DefaultMaxConnsPerSource (256);
	// negative is refused.
	MaxConnsPerSource int
	// MaxConns caps all client connections open at once, like
	// MaxConnsPerSource. Optional; default DefaultMaxConns (4096);
	// negative is refused.
	MaxConns int
	// Logger receives logs. Optional; default discards.
	Logger *slog.Logger
}

// Forward carries every connection accepted on a local TCP port to one
// overlay destination (the --forward flag). If the target cannot be
// dialed the local connection is closed and the failure logged; the
// forward keeps serving.
type Forward struct {
	*relay
}

// ParseForward parses the --forward flag: "LISTEN=TARGET", e.g.
// "127.0.0.1:9000=search:8080". A bare port as LISTEN ("9000=search:8080")
// means 127.0.0.1:9000. Overlay and Logger are left for the caller.
func ParseForward(s string) (ForwardConfig, error) {
	l, t, ok := strings.Cut(s, "=")
	if !ok {
		return ForwardConfig{}, fmt.Errorf("proxy: forward %q: want LISTEN=TARGET, e.g. 127.0.0.1:9000=search:8080", s)
	}
	l, t = strings.TrimSpace(l), strings.TrimSpace(t)
	if _, err := parsePort(l); err == nil {
		l = net.JoinHostPort("127.0.0.1", l)
	}
	if _, _, err := splitPort(l); err != nil {
		return ForwardConfig{}, fmt.Errorf("proxy: forward %q: local address %q: %v (want host:port, e.g. 127.0.0.1:9000)", s, l, err)
	}
	if err := checkTarget(t); err != nil {
		return ForwardConfig{}, fmt.Errorf("proxy: forward %q: target: %v", s, err)
	}
	return ForwardConfig{Listen: l, Target: t}, nil
}

// checkTarget validates "host:port" with a non-empty host and a port in
// 1..65535.
func checkTarget(t string) error {
	host, port, err := splitPort(t)
	if err != nil {
		return fmt.Errorf("%q: %v (want name:port, e.g. search:8080)", t, err)
	}
	if host == "" {
		return fmt.Errorf("%q: missing host (want name:port, e.g. search:8080)", t)
	}
	if port == 0 {
		return fmt.Errorf("%q: port 0 is not a destination", t)
	}
	return nil
}

// NewForward listens on cfg.Listen and starts forwarding.
func NewForward(cfg ForwardConfig) (*Forward, error) {
	if cfg.Overlay == nil {
		return nil, errors.New("proxy: forward: Overlay is required")
	}
	if cfg.Listen == "" {
		return nil, errors.New("proxy: forward: Listen is required")
	}
	if err := checkTarget(cfg.Target); err != nil {
		return nil, fmt.Errorf("proxy: forward: target %v", err)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	base := orDiscard(cfg.Logger).With("proxy", "forward") // "endpoint" is the refused source there
	lim, err := newLimiter(cfg.MaxConnsPerSource, cfg.MaxConns, base)
	if err != nil {
		return nil, fmt.Errorf("proxy: forward: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxy: forward: listen on %s: %w", cfg.Listen, err)
	}
	target, overlay := cfg.Target, cfg.Overlay
	dial := func(ctx context.Context) (net.Conn, error) { return overlay.Dial(ctx, "tcp", target) }
	log := base.With("endpoint", cfg.Target)
	return &Forward{startRelay(&limitListener{Listener: ln, lim: lim}, dial, cfg.DialTimeout, log, "forward: dial target failed; closing local connection")}, nil
}
