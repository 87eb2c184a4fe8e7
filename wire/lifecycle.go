package wire

import "time"

// PathAdminRevoke is the admin call that revokes a node: POST
// RevokeRequest to PathAdminNodes + "/{name}" + PathAdminRevoke (admin) →
// Revocation.
const PathAdminRevoke = "/revoke"

// PathAdminRevocations lists every revoked or expired identity: GET
// (admin) → []Revocation, newest first.
const PathAdminRevocations = "/v1/admin/revocations"

// RevokeRequest is the body of a node revocation.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"` // free text for the record and logs; optional
}

// Revocation states: why an identity may no longer take part.
const (
	StateRevoked = "revoked" // by an admin
	StateExpired = "expired" // its node TTL ran out
)

// Revocation is the coordinator's permanent record of an identity that was
// revoked or expired. The identity (DID) and every WireGuard key it used are
// refused from then on; the name and addresses are free again.
type Revocation struct {
	Node   Node      `json:"node"`             // the node record as it was
	State  string    `json:"state"`            // StateRevoked or StateExpired
	Reason string    `json:"reason,omitempty"` // admin's reason, or the expiry
	At     time.Time `json:"at"`
	WGKeys []string  `json:"wg_keys"` // every WireGuard key the identity used (base64)
}
