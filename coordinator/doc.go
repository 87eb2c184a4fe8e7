// Package coordinator is agentnet's control plane: an HTTPS API that enrolls
// nodes with join tokens, allocates their overlay addresses (IPAM), keeps the
// durable state in a store (package coordinator/store), and pushes each node
// its own signed network map over a long-lived stream.
//
// The coordinator never carries agent traffic and never imports wireguard-go
// or gVisor; everything it shares with nodes and admin tools is in wire (the
// admin client is wire/adminclient). Only cmd/, internal/testnet and bench
// import this package.
//
// Trust: the server certificate is self-signed and reaches clients as a pin
// (wire.CertPin) inside a join token or admin.cred (wire.AdminCred). Nodes
// authenticate every request with their Ed25519 identity key
// (wire.SignRequest), each accepted once (replay.go); the administrator
// authenticates with the bearer secret in admin.cred. Network maps are
// signed with a separate Ed25519 key (wire.Sign), which also signs the
// audit checkpoints. A WireGuard key is bound to one node identity for
// good (coordinator/store's key index, checked in the writing transaction).
//
// This package is the core; its parts are packages of their own:
// coordinator/store (Store, Tx and the bbolt implementation),
// coordinator/audit (the tamper-evident audit log and its verifier),
// coordinator/console (the web console, behind console.Core) and
// coordinator/policy (the policy document).
//
// Files by concern: coordinator.go (Config, New, Close), tls.go (certificate
// and keys on disk), ipam.go (addresses), tokens.go (join tokens), enroll.go
// and node.go (node requests), snapshot.go (the committed node set), maps.go
// and delta.go (per-node maps and deltas), stream.go (fan-out), probe.go
// (probe push), relays.go (relay credentials in maps), revoke.go and
// expiry.go (node lifecycle), admin.go (admin API), http.go (middleware and
// error JSON), ratelimit.go (per-source limits), connlimit.go (connection
// caps and timeouts), replay.go (signed-request replay cache), stats.go and metrics.go
// (counters), events.go (lifecycle events to the audit log), audit_api.go (node reports and the
// admin audit API), console.go (the console's Core), policy_api.go (the
// access policy: versions, compiled filters and pruned peers in maps, admin
// endpoints).
package coordinator
