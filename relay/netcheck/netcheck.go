// Package netcheck diagnoses a node's way to its relays, as 'agentnet
// netcheck' reports it: STUN binding to each relay's main and STUN alt
// ports (the node's mapped address, its NAT's mapping behaviour, RFC 4787
// §4.1, and the round trip), and a TURN allocation over each transport the
// relay offers with the node's own credential (turnclient.Probe).
package netcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/agentnet/agentnet/relay/turnclient"
	"github.com/agentnet/agentnet/wire"
)

// NAT mapping behaviours (RFC 4787 §4.1) as netcheck reports them.
const (
	MappingIndependent = "endpoint-independent"
	MappingDependent   = "endpoint-dependent (symmetric)"
	MappingUnknown     = "unknown"
)

// Config configures Check.
type Config struct {
	// Relays is required: the relays to check, with the node's credentials,
	// as in its network map. Check sends to these addresses only.
	Relays []wire.Relay
	// Timeout is optional: the limit of each probe. Default 3s.
	Timeout time.Duration
	// Logger is optional. Default: discard.
	Logger *slog.Logger
	// Now is optional: the clock for credential expiry. Default time.Now.
	// Latencies and socket deadlines are measured on the real clock.
	Now func() time.Time
}

// Report is the result of Check. Its JSON field names are stable.
type Report struct {
	UDP     bool          `json:"udp"`         // some relay answered STUN over UDP
	Mapping string        `json:"nat_mapping"` // Mapping*: over all relays that answered on both ports
	Relays  []RelayReport `json:"relays"`
}

// RelayReport is what Check learnt about one relay.
type RelayReport struct {
	Name      string            `json:"name"`
	Mapped    netip.AddrPort    `json:"mapped,omitzero"`     // our address as the main UDP port saw it
	AltMapped netip.AddrPort    `json:"alt_mapped,omitzero"` // as the STUN alt port saw it
	Mapping   string            `json:"nat_mapping"`
	LatencyMS float64           `json:"latency_ms,omitempty"` // STUN round trip on the main UDP port
	STUNError string            `json:"stun_error,omitempty"`
	CredError string            `json:"cred_error,omitempty"` // the map's credential is unusable
	Allocs    []TransportReport `json:"transports"`
}

// TransportReport is one TURN allocation attempt.
type TransportReport struct {
	Transport string         `json:"transport"` // wire.Transport*
	Addr      netip.AddrPort `json:"addr"`
	OK        bool           `json:"ok"`
	Relayed   netip.AddrPort `json:"relayed,omitzero"`
	LatencyMS float64        `json:"latency_ms,omitempty"` // connect (and TLS) plus allocate
	Error     string         `json:"error,omitempty"`
}

// Check probes every relay at once: STUN binding from one fresh UDP socket
// to the main and STUN alt ports (mapped address, NAT mapping behaviour,
// latency), and a TURN allocation over each of the relay's transports with
// the node's credentials (TLS trusts exactly the relay's pin). Allocations
// are released before Check returns.
func Check(ctx context.Context, cfg Config) Report {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	rep := Report{Relays: make([]RelayReport, len(cfg.Relays)), Mapping: MappingUnknown}
	var wg sync.WaitGroup
	for i, r := range cfg.Relays {
		wg.Go(func() { rep.Relays[i] = checkRelay(ctx, cfg, r) })
	}
	wg.Wait()
	for _, r := range rep.Relays {
		if r.Mapped.IsValid() {
			rep.UDP = true
		}
		switch r.Mapping {
		case MappingDependent:
			rep.Mapping = MappingDependent
		case MappingIndependent:
			if rep.Mapping == MappingUnknown {
				rep.Mapping = MappingIndependent
			}
		}
	}
	return rep
}

func checkRelay(ctx context.Context, cfg Config, r wire.Relay) RelayReport {
	rr := RelayReport{Name: r.Name, Mapping: MappingUnknown, Allocs: []TransportReport{}}
	if !r.Expires.IsZero() && !cfg.Now().Before(r.Expires) {
		rr.CredError = fmt.Sprintf("credential expired at %s; the cached map is stale: run the node so it fetches a fresh one", r.Expires.UTC().Format(time.RFC3339))
	}
	var udpAddr netip.AddrPort
	for _, a := range r.Addrs {
		if a.Transport == wire.TransportUDP {
			udpAddr = a.Addr
			break
		}
	}
	var wg sync.WaitGroup
	if udpAddr.IsValid() {
		wg.Go(func() { stunCheck(ctx, cfg, r, udpAddr, &rr) })
	} else {
		rr.STUNError = "relay has no UDP address"
	}
	allocs := make([]TransportReport, len(r.Addrs))
	for i, a := range r.Addrs {
		wg.Go(func() { allocs[i] = allocCheck(ctx, cfg, r, a) })
	}
	wg.Wait()
	rr.Allocs = allocs
	return rr
}

// stunCheck sends binding requests to the main port and then the STUN alt
// port from one fresh socket.
func stunCheck(ctx context.Context, cfg Config, r wire.Relay, main netip.AddrPort, rr *RelayReport) {
	uc, err := net.ListenUDP("udp", nil)
	if err != nil {
		rr.STUNError = fmt.Sprintf("open UDP socket: %v", err)
		return
	}
	defer uc.Close()
	stop := context.AfterFunc(ctx, func() { _ = uc.SetReadDeadline(time.Now()) })
	defer stop()
	mapped, rtt, err := stunBinding(ctx, uc, main, cfg.Timeout)
	if err != nil {
		rr.STUNError = fmt.Sprintf("STUN to %v: %v (UDP blocked?)", main, err)
		return
	}
	rr.Mapped, rr.LatencyMS = mapped, float64(rtt.Microseconds())/1000
	if !r.STUNAlt.IsValid() {
		return
	}
	alt, _, err := stunBinding(ctx, uc, r.STUNAlt, cfg.Timeout)
	if err != nil {
		rr.STUNError = fmt.Sprintf("STUN to alt port %v: %v", r.STUNAlt, err)
		return
	}
	rr.AltMapped = alt
	if alt == mapped {
		rr.Mapping = MappingIndependent
	} else {
		rr.Mapping = MappingDependent
	}
}

// stunRetransmit is the interval between binding request retransmissions
// (RFC 8489 §6.2.1 uses 500 ms as the initial RTO).
const stunRetransmit = 500 * time.Millisecond

// stunBinding performs one STUN binding transaction with to and returns the
// XOR-MAPPED-ADDRESS and the round trip of the answered request.
func stunBinding(ctx context.Context, uc *net.UDPConn, to netip.AddrPort, timeout time.Duration) (netip.AddrPort, time.Duration, error) {
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		sent := time.Now()
		if _, err := uc.WriteToUDPAddrPort(req.Raw, to); err != nil {
			return netip.AddrPort{}, 0, err
		}
		rd := sent.Add(stunRetransmit)
		if rd.After(deadline) {
			rd = deadline
		}
		_ = uc.SetReadDeadline(rd)
		for {
			n, from, err := uc.ReadFromUDPAddrPort(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			} else if err != nil {
				return netip.AddrPort{}, 0, err
			}
			if from.Addr().Unmap() != to.Addr().Unmap() || from.Port() != to.Port() || !stun.IsMessage(buf[:n]) {
				continue
			}
			resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if resp.Decode() != nil || resp.TransactionID != req.TransactionID || resp.Type != stun.BindingSuccess {
				continue
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(resp); err != nil {
				return netip.AddrPort{}, 0, fmt.Errorf("answer without XOR-MAPPED-ADDRESS: %w", err)
			}
			ip, _ := netip.AddrFromSlice(xor.IP)
			return netip.AddrPortFrom(ip.Unmap(), uint16(xor.Port)), time.Since(sent), nil
		}
		if err := ctx.Err(); err != nil {
			return netip.AddrPort{}, 0, err
		}
	}
	return netip.AddrPort{}, 0, fmt.Errorf("no answer within %v", timeout)
}

// allocCheck allocates over one transport, then releases the allocation.
func allocCheck(ctx context.Context, cfg Config, r wire.Relay, a wire.RelayAddr) TransportReport {
	tr := TransportReport{Transport: a.Transport, Addr: a.Addr}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	one := r
	one.Addrs = []wire.RelayAddr{a}
	// Expires is judged above (CredError); the relay judges it here.
	one.Expires = time.Time{}
	c, err := turnclient.DialProbe(ctx, turnclient.Config{Relay: one, Transport: a.Transport, Timeout: cfg.Timeout, Logger: cfg.Logger})
	if err != nil {
		tr.Error = err.Error()
		return tr
	}
	defer c.Close()
	relayed, err := c.Allocate(ctx)
	if err != nil {
		tr.Error = err.Error()
		return tr
	}
	tr.OK, tr.Relayed, tr.LatencyMS = true, relayed, float64(time.Since(start).Microseconds())/1000
	return tr
}
