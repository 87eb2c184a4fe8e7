package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors shared by both sides of the control protocol.
var (
	ErrVersion      = errors.New("control protocol version mismatch")
	ErrBadSignature = errors.New("bad signature")
	ErrBadToken     = errors.New("malformed join token")
	ErrBadDID       = errors.New("malformed did:key")
	ErrBadWGKey     = errors.New("malformed WireGuard key")
)

// Error codes carried in ErrorResponse.Code. Clients decide on the code, the
// message is for people.
const (
	CodeVersion      = "version_mismatch"
	CodeBadRequest   = "bad_request"
	CodeTooLarge     = "too_large"
	CodeBadToken     = "bad_token"
	CodeTokenExpired = "token_expired"
	CodeTokenUsed    = "token_used"
	CodeNameTaken    = "name_taken"
	CodeUnauthorized = "unauthorized"
	CodeNotFound     = "not_found"
	CodeNoAddresses  = "no_addresses" // the address pool is exhausted
	CodeRateLimited  = "rate_limited" // too many requests from this source; wait Retry-After seconds
	CodeReplayed     = "replayed"     // 409: a signed request whose nonce was already used; sign a new one
	CodeInternal     = "internal"

	// Lifecycle refusals (permanent: the node must not retry).
	CodeNodeRevoked = "node_revoked" // an admin revoked this identity; re-enroll with a new identity and token
	CodeNodeExpired = "node_expired" // the identity outlived its token's node TTL; re-enroll with a new token
	CodeKeyRetired  = "key_retired"  // a WireGuard key that was rotated away or revoked; never accepted again
	CodeKeyInUse    = "key_in_use"   // 409: a WireGuard key another node identity holds or held; one key, one node, ever

	// Admin refusals.
	CodeTokenRevoked      = "token_revoked"       // enrollment with a join token an admin revoked
	CodePolicyInvalid     = "policy_invalid"      // 422: the policy document does not parse or validate
	CodePolicyTestsFailed = "policy_tests_failed" // 422: its tests fail against the current nodes
)

// ErrorResponse is the JSON body of every non-2xx control response.
type ErrorResponse struct {
	Code            string `json:"code"`
	Error           string `json:"error"`
	ProtocolVersion int    `json:"protocol_version"`
}

// APIError is a refusal as a client of the coordinator API sees it: the
// HTTP status and the ErrorResponse it carried. Callers decide on Code.
type APIError struct {
	Status  int
	Code    string // a Code* value
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("coordinator refused (%d %s): %s", e.Status, e.Code, e.Message)
}
