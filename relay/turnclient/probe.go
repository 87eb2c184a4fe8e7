package turnclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/pion/turn/v4"

	"github.com/agentnet/agentnet/relay/internal/pionlog"
)

// Probe is a plain pion TURN client on its own socket or connection, for
// checks (netcheck) and tests (attacker fixtures): pion's own read loop,
// one allocation at a time, no batching. The data path uses Allocation.
//
// WriteTo, ReadFrom and SetReadDeadline act on the relayed address and
// need a successful Allocate first. Close releases everything; blocked
// and later ReadFrom calls then return an error.
type Probe struct {
	client  *turn.Client
	conn    net.PacketConn // towards the relay
	relayed net.PacketConn // after Allocate
	server  *net.UDPAddr
	timeout time.Duration
}

// DialProbe connects a TURN client to cfg.Relay over cfg.Transport (TLS
// trusts exactly the relay's pin) and starts its read loop. It does not
// allocate: Allocate does, so that a test can see the relay refuse a
// credential. Connecting takes at most cfg.Timeout.
func DialProbe(ctx context.Context, cfg Config) (*Probe, error) {
	server, err := cfg.setDefaults(slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	pc, err := cfg.dial(dctx, server)
	if err != nil {
		return nil, fmt.Errorf("turnclient: connect %s %v: %w", cfg.Transport, server, err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server.String(),
		TURNServerAddr: server.String(),
		Conn:           pc,
		Username:       cfg.Relay.Username,
		Password:       cfg.Relay.Password,
		LoggerFactory:  pionlog.Factory{Log: cfg.Logger},
	})
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("turnclient: TURN client for %v: %w", server, err)
	}
	if err := c.Listen(); err != nil {
		c.Close()
		pc.Close()
		return nil, fmt.Errorf("turnclient: TURN client for %v: %w", server, err)
	}
	return &Probe{client: c, conn: pc, server: net.UDPAddrFromAddrPort(server), timeout: cfg.Timeout}, nil
}

// Allocate makes the client's allocation and returns its relayed address.
// It takes at most the Config's Timeout; ctx cancels a pending allocation
// by closing the connection.
func (p *Probe) Allocate(ctx context.Context) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { p.conn.Close() })
	defer stop()
	rc, err := p.client.Allocate()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return netip.AddrPort{}, fmt.Errorf("turnclient: allocate: %w", err)
	}
	p.relayed = rc
	ap, _ := netip.ParseAddrPort(rc.LocalAddr().String())
	return ap, nil
}

// WriteTo sends b from the relayed address to the peer at to (pion
// installs the permission and a channel first).
func (p *Probe) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if p.relayed == nil {
		return 0, errNotAllocated
	}
	return p.relayed.WriteTo(b, net.UDPAddrFromAddrPort(to))
}

// ReadFrom reads one packet a peer sent to the relayed address.
func (p *Probe) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	if p.relayed == nil {
		return 0, netip.AddrPort{}, errNotAllocated
	}
	n, from, err := p.relayed.ReadFrom(b)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		return 0, netip.AddrPort{}, fmt.Errorf("turnclient: peer address %v is not UDP", from)
	}
	ap := ua.AddrPort()
	return n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// WriteRaw sends b to the relay as it is, on the probe's socket or stream
// beside pion's own messages: for fixtures that craft their own frames
// (ChannelData in a benchmark, malformed requests in an attacker test).
func (p *Probe) WriteRaw(b []byte) error {
	_, err := p.conn.WriteTo(b, p.server)
	return err
}

// SetReadDeadline sets the deadline of ReadFrom.
func (p *Probe) SetReadDeadline(t time.Time) error {
	if p.relayed == nil {
		return errNotAllocated
	}
	return p.relayed.SetReadDeadline(t)
}

var errNotAllocated = errors.New("turnclient: probe has no allocation (call Allocate)")

// Close releases the allocation (if any), the client and its socket.
func (p *Probe) Close() {
	if p.relayed != nil {
		p.relayed.Close()
	}
	p.client.Close()
	p.conn.Close()
}
