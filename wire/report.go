package wire

import (
	"encoding/json"
	"net/netip"
	"time"
)

// Audit and node-report API paths.
const (
	// PathReport takes a node's batched security events: POST
	// ReportRequest, node-signed → 204. The coordinator writes them to its
	// audit log as node_report records; 429 means "too often, keep the
	// events and send them later".
	PathReport = "/v1/report"
	// PathAdminAudit reads the coordinator's audit log (admin): GET with
	// query n (records, default 20, at most MaxAuditPage), after (a seq:
	// records after it, oldest first; without it the newest n) and wait
	// (seconds to hold the request open when nothing is newer than after,
	// at most 25) → AuditPage.
	PathAdminAudit = "/v1/admin/audit"
)

// MaxReportEvents bounds the events of one ReportRequest (so a full report
// stays well under MaxBodyBytes).
const MaxReportEvents = 128

// MaxAuditPage bounds the records of one AuditPage.
const MaxAuditPage = 1000

// AuditPage is the answer of PathAdminAudit: raw audit lines (exactly as in
// the coordinator's file, so a client can check their hashes) and the
// newest seq.
type AuditPage struct {
	Records []json.RawMessage `json:"records"`
	HeadSeq uint64            `json:"head_seq"`
}

// Node report event kinds.
const (
	ReportDenial      = "denial"       // packets dropped by the node's filter
	ReportChannelUp   = "channel_up"   // first WireGuard handshake with a peer
	ReportChannelDown = "channel_down" // a peer left the map or its session expired
)

// ReportRequest is the body of PathReport.
type ReportRequest struct {
	Events  []ReportEvent `json:"events"`
	Dropped uint64        `json:"dropped,omitempty"` // events the node dropped (queue full) since its last accepted report
}

// ReportEvent is one security event seen by a node. Denials of the same
// flow key (Dir, Proto, Src address, Dst, Rule, Reason) within one batch
// are merged: Count says how many packets, Time is the first.
type ReportEvent struct {
	Time   time.Time      `json:"time"`
	Kind   string         `json:"kind"`             // ReportDenial, ReportChannelUp, ReportChannelDown
	Peer   string         `json:"peer,omitempty"`   // the peer's name, when known
	Dir    string         `json:"dir,omitempty"`    // denial: "in" (received) or "out" (sent)
	Proto  string         `json:"proto,omitempty"`  // denial: "tcp", "udp", "icmp", …
	Src    netip.AddrPort `json:"src,omitzero"`     // denial: packet source
	Dst    netip.AddrPort `json:"dst,omitzero"`     // denial: packet destination
	Rule   string         `json:"rule,omitempty"`   // denial: the rule that decided ("default-deny" when none matched)
	Reason string         `json:"reason,omitempty"` // why: "no rule", "removed from map", "session expired", …
	Path   string         `json:"path,omitempty"`   // channel_up: "direct" or "relay"
	Count  uint64         `json:"count,omitempty"`  // denial: packets merged into this event
}
