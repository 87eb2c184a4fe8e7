package wire

import "time"

// The admin API beyond tokens and nodes (control.go), revocation
// (lifecycle.go) and the audit log (report.go): the access policy and node
// tags. Every path needs the admin secret (HeaderAdmin).
const (
	PathAdminPolicy    = "/v1/admin/policy"     // PUT PolicySetRequest → PolicySetResponse; GET [?version=N] → PolicyRecord
	PathAdminPolicyWhy = "/v1/admin/policy/why" // POST WhyRequest → WhyResponse
	// PathNodeTagsSuffix follows PathAdminNodes/{name}: PUT SetTagsRequest
	// → Node.
	PathNodeTagsSuffix = "/tags"
)

// PolicySetRequest submits a new policy document.
type PolicySetRequest struct {
	Text   string `json:"text"`             // required: the YAML document
	Source string `json:"source,omitempty"` // optional: file name used in messages; default "policy.yaml"
	By     string `json:"by,omitempty"`     // optional: who submits it (recorded); default "admin"
}

// PolicySetResponse reports an accepted policy.
type PolicySetResponse struct {
	Version uint64   `json:"version"`
	Rules   int      `json:"rules"`
	Passed  int      `json:"tests_passed"`
	Skipped []string `json:"tests_skipped,omitempty"` // tests that depend on tags of nodes not enrolled
}

// PolicyRecord is one accepted version of the policy document, as the
// coordinator stores it and as 'agentnet policy get' returns it. Version 0
// is the built-in default; it is never stored.
type PolicyRecord struct {
	Version uint64    `json:"version"`
	Text    string    `json:"text"`              // the YAML exactly as submitted
	Source  string    `json:"source,omitempty"`  // file name it was submitted from
	Created time.Time `json:"created,omitzero"`  // when it was accepted
	By      string    `json:"by,omitempty"`      // who submitted it, as the client said
	Address string    `json:"address,omitempty"` // the submitting client's address
}

// WhyRequest asks whether one connection between two enrolled nodes is
// allowed by the current policy.
type WhyRequest struct {
	From  string `json:"from"`            // required: node name
	To    string `json:"to"`              // required: node name
	Proto string `json:"proto,omitempty"` // optional: tcp (default), udp or icmp
	Port  uint16 `json:"port,omitempty"`  // required for tcp and udp
}

// WhyResponse is the decision, the rule that made it (empty when no rule
// allows it: default deny) and the policy version it comes from.
type WhyResponse struct {
	Allow   bool   `json:"allow"`
	Rule    string `json:"rule,omitempty"`
	Version uint64 `json:"version"`
	From    string `json:"from"`
	To      string `json:"to"`
	Proto   string `json:"proto"`
	Port    uint16 `json:"port,omitempty"`
}

// SetTagsRequest replaces a node's tags.
type SetTagsRequest struct {
	Tags []string `json:"tags"` // each "tag:x"; empty removes every tag
}

// TokenInfo is a join token as GET PathAdminTokens lists it: everything but
// the secret's hash.
type TokenInfo struct {
	ID       string    `json:"id"`
	Tags     []string  `json:"tags,omitempty"`
	Reusable bool      `json:"reusable"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	Uses     int       `json:"uses"`
	Revoked  bool      `json:"revoked,omitempty"`
	NodeTTL  string    `json:"node_ttl,omitempty"`
}
