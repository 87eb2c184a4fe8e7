package coordinator

import (
	"log/slog"

	"github.com/agentnet/agentnet/coordinator/audit"
)

// Lifecycle event kinds passed to event.
const (
	eventRevoke     = "node.revoke"  // an admin revoked a node (node, did, reason, wg keys)
	eventExpire     = "node.expire"  // a node's identity expired and was dropped (node, did, expires)
	eventRotate     = "node.rotate"  // a node bound a new WireGuard key (node, did, old, new fingerprints)
	eventRefused    = "node.refused" // a revoked or expired identity was refused (node/did, reason, path)
	eventKeyRefused = "key.refused"  // a retired, revoked or other node's WireGuard key was offered (did, reason, path, err)
)

// event writes one node-lifecycle event to the audit log (coordinator/audit): it
// is called once per event, after the change it reports has been committed
// (refusals: when the refusal is sent). kind is one of the event*
// constants; attrs use the log field vocabulary (node, peer, reason, err,
// plus did, key, old, new). Refusals are aggregated per (did, reason) like
// every refused request. It never blocks for long: it runs on request
// goroutines.
func (c *Coordinator) event(kind string, attrs ...slog.Attr) {
	fields := make([]any, 0, 2*len(attrs)+4)
	var did, reason string
	for _, a := range attrs {
		switch a.Key {
		case "node":
			fields = append(fields, "subject", a.Value.String())
			continue
		case "did":
			did = a.Value.String()
		case "reason":
			reason = a.Value.String()
		}
		fields = append(fields, a.Key, a.Value.Any())
	}
	switch kind {
	case eventRevoke:
		c.audit.Record(audit.KindNodeRevoke, append(fields, "actor", "admin", "event", kind)...)
	case eventExpire:
		c.audit.Record(audit.KindNodeRevoke, append(fields, "actor", "coordinator", "event", kind)...)
	case eventRotate:
		c.audit.Record(audit.KindKeyRotation, append(fields, "actor", did, "event", kind)...)
	default: // eventRefused, eventKeyRefused
		c.audit.RecordLimited(audit.KindRequestRefused, did, reason, append(fields, "event", kind)...)
	}
}
