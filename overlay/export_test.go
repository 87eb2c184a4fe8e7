package overlay

import "github.com/agentnet/agentnet/overlay/netmap"

// DeliverMapForTest hands a map to the node as if the coordinator's stream
// had sent it.
func (n *Node) DeliverMapForTest(s *netmap.Signed) { n.onSignedMap(s) }
