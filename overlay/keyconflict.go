package overlay

import (
	"log/slog"

	"github.com/agentnet/agentnet/wire"
)

// Key conflicts in a map (issue 17 item 1). A node keeps one WireGuard
// peer per key, so a map in which two peers share a key, or a peer has
// this node's own key, cannot be applied as it stands: whichever came
// last would win the key, and with it the traffic meant for the other.
// The coordinator keeps keys unique; a map that breaks that came from a
// buggy or lying coordinator, or from a node that published someone
// else's key. Every peer involved is dropped — the node cannot tell the
// victim from the impostor, and sending the victim's traffic to an
// impostor is worse than not reaching the victim — and the drop is
// warned about once per key and counted.

// dropKeyConflicts returns peers without every peer whose WireGuard key
// appears more than once or is self, and the keys that caused drops.
// Peers whose key does not parse are kept (peerFromNode and peerInfos
// skip them and log it).
func dropKeyConflicts(peers []wire.Node, self [32]byte) (kept []wire.Node, dropped int, keys [][32]byte) {
	seen := make(map[[32]byte]int, len(peers))
	for _, p := range peers {
		if k, err := wire.ParseWGKey(p.WGKey); err == nil {
			seen[k]++
		}
	}
	bad := func(k [32]byte) bool { return k == self || seen[k] > 1 }
	var conflicted bool
	for k := range seen {
		if bad(k) {
			conflicted = true
			keys = append(keys, k)
		}
	}
	if !conflicted {
		return peers, 0, nil
	}
	kept = make([]wire.Node, 0, len(peers))
	for _, p := range peers {
		if k, err := wire.ParseWGKey(p.WGKey); err == nil && bad(k) {
			dropped++
			continue
		}
		kept = append(kept, p)
	}
	return kept, dropped, keys
}

// keyConflicts filters m's peers (dropKeyConflicts), warning once per
// conflicting key and counting the peers dropped. Called under mapMu,
// which guards conflictWarned.
func (n *Node) keyConflicts(peers []wire.Node, self [32]byte) []wire.Node {
	kept, dropped, keys := dropKeyConflicts(peers, self)
	if dropped == 0 {
		return peers
	}
	n.keyConflictPeers.Add(uint64(dropped))
	if n.conflictWarned == nil {
		n.conflictWarned = map[[32]byte]bool{}
	}
	for _, k := range keys {
		if n.conflictWarned[k] {
			continue
		}
		n.conflictWarned[k] = true
		var names []string
		for _, p := range peers {
			if pk, err := wire.ParseWGKey(p.WGKey); err == nil && pk == k {
				names = append(names, p.Name)
			}
		}
		n.log.Warn("network map gives one WireGuard key to several peers or to this node; ignoring them all",
			slog.String("peer", shortKey(k)), slog.Any("names", names), slog.Bool("own_key", k == self),
			slog.String("reason", "key conflict"))
	}
	return kept
}
