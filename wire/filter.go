package wire

// Filter is the policy compiled for one node, carried in its signed map and
// enforced by the node on every packet (default deny). Rules are
// connection-oriented: an Inbound rule lets a peer open connections (TCP,
// UDP flows, ICMP echo) to this node; an Outbound rule lets this node open
// them to a peer. Replies of an allowed connection are allowed both ways.
type Filter struct {
	PolicyVersion uint64       `json:"policy_version"`
	Inbound       []FilterRule `json:"inbound"`
	Outbound      []FilterRule `json:"outbound"`
}

// FilterRule allows connections between this node and the listed peer
// addresses on the listed protocols and ports.
type FilterRule struct {
	Rule   string      `json:"rule"`   // name of the policy rule it comes from (for counters and logs)
	Peers  []string    `json:"peers"`  // addresses or prefixes of the other side ("100.96.0.5/32", "fd7a::5/128")
	Protos []string    `json:"protos"` // "tcp", "udp", "icmp"; empty: all
	Ports  []PortRange `json:"ports"`  // destination ports; empty: all (ignored for icmp)
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}
