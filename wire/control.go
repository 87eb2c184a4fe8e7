package wire

import (
	"net/netip"
	"time"
)

// Control API paths, all under the coordinator's HTTPS base URL.
const (
	PathEnroll      = "/v1/enroll"       // POST EnrollRequest, node-signed → EnrollResponse
	PathUpdate      = "/v1/update"       // POST UpdateRequest, node-signed → Map as Signed
	PathStream      = "/v1/netmap"       // GET, node-signed → stream of StreamMessage lines
	PathAdminTokens = "/v1/admin/tokens" // POST CreateTokenRequest (admin) → CreateTokenResponse
	PathAdminNodes  = "/v1/admin/nodes"  // GET (admin) → []Node; DELETE /v1/admin/nodes/{name}
	HeaderAdmin     = "Authorization"    // "Bearer <admin secret>"
)

// MaxBodyBytes bounds every control request body; larger ones are refused.
const MaxBodyBytes = 64 << 10

// EnrollRequest is the body of PathEnroll. The request is also signed with
// the identity key it enrolls (proof of possession), so HeaderNode names
// the identity. A node re-enrolling with a known identity needs no token.
type EnrollRequest struct {
	ProtocolVersion int              `json:"protocol_version"`
	Token           string           `json:"token,omitempty"`
	Name            string           `json:"name"`
	WGKey           string           `json:"wg_key"`
	DiscoKey        string           `json:"disco_key,omitempty"`
	Endpoints       []netip.AddrPort `json:"endpoints,omitempty"`
}

// EnrollResponse is what a node learns at enrollment.
type EnrollResponse struct {
	Node           Node    `json:"node"`
	CoordinatorKey []byte  `json:"coordinator_key"` // Ed25519 public key that signs maps
	Map            *Signed `json:"map"`
}

// UpdateRequest reports a node's current WireGuard key and endpoints.
type UpdateRequest struct {
	WGKey     string           `json:"wg_key"`
	DiscoKey  string           `json:"disco_key,omitempty"`
	Endpoints []netip.AddrPort `json:"endpoints"`
	Relayed   []netip.AddrPort `json:"relayed,omitempty"`
}

// StreamMessage is one line (JSON, newline-terminated) of the netmap
// stream. The coordinator sends a Map first, then on every change a Map or,
// when the node asked for them (HeaderStreamDeltas), a Delta from the
// previous one; and a keepalive every StreamKeepalive.
type StreamMessage struct {
	Type  string  `json:"type"` // MsgMap, MsgDelta, MsgKeepalive or MsgProbe
	Map   *Signed `json:"map,omitempty"`
	Delta *Signed `json:"delta,omitempty"` // a signed Delta (MsgDelta)
	Probe *Probe  `json:"probe,omitempty"`
}

// StreamMessage types.
const (
	MsgMap       = "map"
	MsgKeepalive = "keepalive"
)

// StreamKeepalive is how often the coordinator writes to an idle stream; a
// node that hears nothing for 3× this reconnects.
const StreamKeepalive = 10 * time.Second

// MaxStreamLine bounds one line of the stream.
const MaxStreamLine = 8 << 20

// CreateTokenRequest asks for a join token.
type CreateTokenRequest struct {
	Tags       []string `json:"tags,omitempty"`
	Reusable   bool     `json:"reusable"`
	TTLSeconds int64    `json:"ttl_seconds"` // 0: the coordinator's default
	// NodeTTLSeconds, when > 0, gives every node enrolled with the token an
	// identity expiry that many seconds after its enrollment. 0: never.
	NodeTTLSeconds int64 `json:"node_ttl_seconds,omitempty"`
}

// CreateTokenResponse carries the new token; its secret is shown once.
type CreateTokenResponse struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
}
