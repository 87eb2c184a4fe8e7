package overlay

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// Status is what `agentnet status` shows. JSON field names are stable.
type Status struct {
	Self        PeerStatus `json:"self"`
	Coordinator string     `json:"coordinator"`
	Connected   bool       `json:"connected"` // netmap stream is up
	MapSerial   uint64     `json:"map_serial"`
	MapAge      float64    `json:"map_age_seconds"`
	MapsRefused uint64     `json:"maps_refused"` // maps that failed verification
	// KeyConflictPeers counts map peers ignored because another peer had
	// the same WireGuard key, or it was this node's (keyconflict.go).
	KeyConflictPeers uint64       `json:"key_conflict_peers"`
	Domain           string       `json:"domain"`
	Listen           string       `json:"listen"`
	Paths            PathStats    `json:"paths"`
	Peers            []PeerStatus `json:"peers"`
	// Refused is set when the coordinator revoked or expired this node
	// (code wire.CodeNodeRevoked or CodeNodeExpired): it has no peers
	// and no longer contacts the coordinator.
	Refused *wire.ErrorResponse `json:"refused,omitempty"`
	WGKey   string              `json:"wg_key"` // fingerprint of the WireGuard public key in use
	Filter  FilterStatus        `json:"filter"`
}

// PathStats are this node's path-discovery counters and its own candidates.
type PathStats struct {
	Endpoints       []string `json:"endpoints"`                 // candidates we publish (local and STUN-mapped)
	Relay           string   `json:"relay,omitempty"`           // relay of our allocation
	RelayTransport  string   `json:"relay_transport,omitempty"` // udp, tcp or tls
	Relayed         string   `json:"relayed,omitempty"`         // our relayed address
	ProbesSent      uint64   `json:"probes_sent"`
	ProbesAnswered  uint64   `json:"probes_answered"`
	PathSwitches    uint64   `json:"path_switches"`
	DiscoDropped    uint64   `json:"disco_dropped"`    // disco messages that did not open or were not expected
	IndexAttributed uint64   `json:"index_attributed"` // packets from new sources named by session index
	RelayRxPackets  uint64   `json:"relay_rx_packets"`
	RelayRxDrops    uint64   `json:"relay_rx_drops"`
	// Junk counts datagrams dropped unanswered because they were junk.
	Junk JunkStats `json:"junk"`
	// InitsUnread counts handshake initiations from unknown sources whose
	// sender was not looked for: over the rate limit, or the queue was
	// full (they still went to WireGuard), or dropped over the rate
	// WireGuard is given.
	InitsUnread InitsUnread `json:"initiations_unread"`
}

// JunkStats counts received datagrams dropped as junk, by kind.
type JunkStats struct {
	NotWireGuard     uint64 `json:"not_wireguard"`     // neither WireGuard, disco nor an expected STUN answer
	WireGuardInvalid uint64 `json:"wireguard_invalid"` // WireGuard-shaped from an unknown source: wrong size, bad MAC1
	WireGuardUnknown uint64 `json:"wireguard_unknown"` // responses, cookies, data from unknown sources naming none of our sessions (passed to WireGuard, which drops them unless the peer roamed)
	TooShort         uint64 `json:"too_short"`         // shorter than any message of its type
	DiscoFailed      uint64 `json:"disco_failed"`      // disco that did not open, from an unknown sender, or unexpected
}

// InitsUnread counts strangers' initiations not read, by reason.
type InitsUnread struct {
	RateLimited uint64 `json:"rate_limited"`
	QueueFull   uint64 `json:"queue_full"`
	// Dropped were not passed to WireGuard either: over the rate of
	// strangers' initiations it is given.
	Dropped uint64 `json:"dropped"`
}

// PeerStatus describes one node.
type PeerStatus struct {
	Name          string      `json:"name"`
	FQDN          string      `json:"fqdn"`
	IPv4          string      `json:"ipv4"`
	IPv6          string      `json:"ipv6"`
	DID           string      `json:"did"`
	Tags          []string    `json:"tags,omitempty"`
	Online        bool        `json:"online"`
	Endpoint      string      `json:"endpoint,omitempty"`
	Path          *PathStatus `json:"path,omitempty"` // nil: no path known
	LastHandshake time.Time   `json:"last_handshake,omitzero"`
	HandshakeAge  float64     `json:"handshake_age_seconds,omitempty"`
	RxBytes       uint64      `json:"rx_bytes"`
	TxBytes       uint64      `json:"tx_bytes"`
}

func nodeStatus(nd wire.Node, domain string) PeerStatus {
	return PeerStatus{Name: nd.Name, FQDN: nd.Name + "." + domain, IPv4: nd.IPv4.String(), IPv6: nd.IPv6.String(),
		DID: nd.DID, Tags: nd.Tags, Online: nd.Online}
}

// Status reports this node and its peers with live WireGuard counters.
func (n *Node) Status() Status {
	n.mu.Lock()
	m, connected, lastMap, refused, wgPub := n.nm, n.connected, n.lastMap, n.refused, n.wgPub
	n.mu.Unlock()
	st := Status{
		Self: nodeStatus(m.Self, m.Domain), Coordinator: n.state.CoordinatorURL, Connected: connected,
		MapSerial: m.Serial, MapsRefused: n.mapsRefused.Load(), KeyConflictPeers: n.keyConflictPeers.Load(), MapAge: n.now().Sub(lastMap).Seconds(), Domain: m.Domain, Listen: n.bind.LocalAddr().String(),
	}
	st.Self.Online = refused == nil
	st.Refused, st.WGKey = refused, wire.Fingerprint(wgPub[:])
	st.Paths = n.pathStats()
	var stats map[[32]byte]*peerStats
	if s, err := n.dev.IpcGet(); err == nil {
		stats = parseWGStats(s)
	}
	now := n.now()
	for _, p := range m.Peers {
		ps := nodeStatus(p, m.Domain)
		if k, err := wire.ParseWGKey(p.WGKey); err == nil {
			if s := stats[k]; s != nil {
				ps.Endpoint, ps.RxBytes, ps.TxBytes, ps.LastHandshake = s.Endpoint, s.RxBytes, s.TxBytes, s.LastHandshake
				if !s.LastHandshake.IsZero() {
					ps.HandshakeAge = now.Sub(s.LastHandshake).Seconds()
				}
			}
			ps.Path = n.pbind.pathStatus(k)
		}
		st.Peers = append(st.Peers, ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })
	st.Filter = n.filter.status()
	return st
}

// PingResult is one ping through the tunnel.
type PingResult struct {
	Peer     string  `json:"peer"`
	IP       string  `json:"ip"`
	RTTms    float64 `json:"rtt_ms"`
	Path     string  `json:"path"`
	Endpoint string  `json:"endpoint"`
}

// Ping sends an ICMP echo to a peer through the WireGuard tunnel and
// reports the round-trip time and the path the packets took.
func (n *Node) Ping(ctx context.Context, peer string) (PingResult, error) {
	p, err := n.LookupNode(peer)
	if err != nil {
		return PingResult{}, err
	}
	rtt, err := n.plane.Ping(ctx, p.IPv4)
	if err != nil {
		return PingResult{}, fmt.Errorf("ping %s (%s): %w", p.Name, p.IPv4, err)
	}
	res := PingResult{Peer: p.Name, IP: p.IPv4.String(), RTTms: float64(rtt.Microseconds()) / 1000, Path: "self"}
	for _, ps := range n.Status().Peers {
		if ps.Name == p.Name {
			res.Endpoint = ps.Endpoint
			if ps.Path != nil {
				res.Path = ps.Path.Kind
			}
		}
	}
	return res, nil
}

// String is the human form: "direct 198.51.100.7:41641" or "relay NAME via
// udp"; "-" for nil.
func (ps *PathStatus) String() string {
	switch {
	case ps == nil:
		return "-"
	case ps.Kind == "relay":
		return "relay " + ps.Relay + " via " + ps.Transport
	case ps.Kind == "direct":
		return "direct " + ps.Endpoint
	}
	return ps.Kind
}

func (n *Node) pathStats() PathStats {
	p := n.pbind
	ps := PathStats{
		ProbesSent: p.probesSent.Load(), ProbesAnswered: p.pongsRecv.Load(), PathSwitches: p.pathSwitches.Load(),
		DiscoDropped: p.discoBad.Load(), IndexAttributed: p.indexAttributed.Load(),
		RelayRxPackets: p.allocRxPackets.Load(), RelayRxDrops: p.allocRxDrops.Load(),
		Junk: JunkStats{NotWireGuard: p.junkRx.Load(), WireGuardInvalid: p.junkWG.Load(), WireGuardUnknown: p.wgUnknown.Load(),
			TooShort: p.junkShort.Load(), DiscoFailed: p.discoBad.Load()},
		InitsUnread: InitsUnread{RateLimited: p.initLimited.Load(), QueueFull: p.initQDrops.Load(), Dropped: p.initDropped.Load()},
	}
	for _, ap := range n.candidates() {
		ps.Endpoints = append(ps.Endpoints, ap.String())
	}
	if a := p.alloc.Load(); a != nil {
		ps.Relay, ps.RelayTransport, ps.Relayed = a.Relay().Name, a.Transport(), a.RelayedAddr().String()
		ps.RelayRxDrops += a.Dropped() // the allocation's own receive drops
	}
	return ps
}
