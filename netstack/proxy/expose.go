package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// ExposeConfig configures NewExpose.
type ExposeConfig struct {
	// Port is the overlay TCP port to accept on. Required (non-zero).
	Port uint16
	// Target is the local service, "host:port", e.g. "127.0.0.1:8080".
	// Required.
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

// Expose carries every connection accepted on an overlay port to one
// local service, dialed with the host's network (the --expose flag).
type Expose struct {
	*relay
}

// ParseExpose parses the --expose flag: "PORT" (overlay PORT to
// 127.0.0.1:PORT), "PORT=LOCALPORT" (to 127.0.0.1:LOCALPORT) or
// "PORT=HOST:LOCALPORT". Overlay and Logger are left for the caller.
func ParseExpose(s string) (ExposeConfig, error) {
	ps, t, hasTarget := strings.Cut(s, "=")
	ps, t = strings.TrimSpace(ps), strings.TrimSpace(t)
	port, err := parsePort(ps)
	if err != nil {
		return ExposeConfig{}, fmt.Errorf("proxy: expose %q: overlay port: %v (want PORT or PORT=HOST:PORT, e.g. 8080 or 80=127.0.0.1:8080)", s, err)
	}
	switch {
	case !hasTarget:
		t = net.JoinHostPort("127.0.0.1", ps)
	case t == "":
		return ExposeConfig{}, fmt.Errorf("proxy: expose %q: empty target after '=' (want e.g. 80=127.0.0.1:8080)", s)
	default:
		if _, err := parsePort(t); err == nil {
			t = net.JoinHostPort("127.0.0.1", t)
		}
	}
	if err := checkTarget(t); err != nil {
		return ExposeConfig{}, fmt.Errorf("proxy: expose %q: local target: %v", s, err)
	}
	return ExposeConfig{Port: port, Target: t}, nil
}

// parsePort parses a port in 1..65535.
func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	if n == 0 {
		return 0, errors.New("port 0 is not allowed")
	}
	return uint16(n), nil
}

// NewExpose listens on overlay port cfg.Port and starts serving.
func NewExpose(cfg ExposeConfig) (*Expose, error) {
	if cfg.Overlay == nil {
		return nil, errors.New("proxy: expose: Overlay is required")
	}
	if cfg.Port == 0 {
		return nil, errors.New("proxy: expose: Port is required")
	}
	if err := checkTarget(cfg.Target); err != nil {
		return nil, fmt.Errorf("proxy: expose: target %v", err)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	base := orDiscard(cfg.Logger).With("proxy", "expose", "port", cfg.Port) // "endpoint" is the refused source there
	lim, err := newLimiter(cfg.MaxConnsPerSource, cfg.MaxConns, base)
	if err != nil {
		return nil, fmt.Errorf("proxy: expose: %w", err)
	}
	addr := fmt.Sprintf(":%d", cfg.Port)
	ln, err := cfg.Overlay.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: expose: listen on overlay port %d: %w", cfg.Port, err)
	}
	target := cfg.Target
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target)
	}
	log := base.With("endpoint", cfg.Target)
	return &Expose{startRelay(&limitListener{Listener: ln, lim: lim}, dial, cfg.DialTimeout, log, "expose: dial local target failed; closing overlay connection")}, nil
}
