package coordinator

import "log/slog"

// Lifecycle event kinds passed to event.
const (
	eventRevoke     = "node.revoke"  // an admin revoked a node (node, did, reason, wg keys)
	eventExpire     = "node.expire"  // a node's identity expired and was dropped (node, did, expires)
	eventRotate     = "node.rotate"  // a node bound a new WireGuard key (node, did, old, new fingerprints)
	eventRefused    = "node.refused" // a revoked or expired identity was refused (node/did, reason, path)
	eventKeyRefused = "key.refused"  // a retired or revoked WireGuard key was offered (did, key fingerprint, reason)
)

// event is the audit hook of the node lifecycle: it is called once per
// event, after the change it reports has been committed (refusals: when
// the refusal is sent). kind is one of the event* constants; attrs use the
// log field vocabulary (node, peer, reason, err, plus did, key, old, new).
//
// It is a no-op for now: the audit log (coordinator/audit*.go) implements
// it. It must not block for long: it runs on request goroutines.
func (c *Coordinator) event(kind string, attrs ...slog.Attr) {
	_, _ = kind, attrs
}
