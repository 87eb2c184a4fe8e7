package wire

import (
	"net/netip"
	"time"
)

// Relay transports, as named in relay.cred, maps and status.
const (
	TransportUDP = "udp"
	TransportTCP = "tcp"
	TransportTLS = "tls"
)

// RelayAddr is one way to reach a relay.
type RelayAddr struct {
	Transport string         `json:"transport"` // TransportUDP, TransportTCP or TransportTLS
	Addr      netip.AddrPort `json:"addr"`
}

// Relay is a TURN/STUN relay as a node sees it in its map: where it listens,
// how to authenticate its TLS listener, and a short-lived TURN credential
// the coordinator issued for this node (TURN REST scheme: Username is
// "<unix expiry>:<node>", Password is base64 HMAC-SHA1 of Username under the
// secret the relay shares with the coordinator).
type Relay struct {
	Name     string         `json:"name"`
	Addrs    []RelayAddr    `json:"addrs"`
	STUNAlt  netip.AddrPort `json:"stun_alt,omitzero"` // a second UDP port answering STUN, for NAT mapping checks
	TLSPin   string         `json:"tls_pin,omitempty"` // SPKI pin of the TLS listener (sha256/…)
	Username string         `json:"username"`
	Password string         `json:"password"`
	Expires  time.Time      `json:"expires"`
}

// PathProbe asks the coordinator to have a peer probe paths to the caller
// now: POST ProbeRequest, node-signed → 204. Both sides then receive a
// MsgProbe on their streams and probe each other at the same moment.
const PathProbe = "/v1/probe"

// ProbeRequest names the peer to punch towards.
type ProbeRequest struct {
	Peer string `json:"peer"` // peer's name
}

// Probe is the payload of a MsgProbe stream message: probe Peer's
// candidates after DelayMS (both sides get the same delay, so their first
// probes cross in flight).
type Probe struct {
	Peer       string           `json:"peer"`   // name
	WGKey      string           `json:"wg_key"` // the peer's WireGuard key
	Endpoints  []netip.AddrPort `json:"endpoints"`
	Relayed    []netip.AddrPort `json:"relayed,omitempty"`
	DelayMS    int              `json:"delay_ms"`
	Generation uint64           `json:"generation"` // grows per request, to discard stale probes
}

// MsgProbe is the stream message type carrying a Probe.
const MsgProbe = "probe"
