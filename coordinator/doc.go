// Package coordinator is agentnet's control plane: an HTTPS API that enrolls
// nodes with join tokens, allocates their overlay addresses (IPAM), keeps the
// durable state in a bbolt store behind the Store interface, and pushes each
// node its own signed network map over a long-lived stream.
//
// The coordinator never carries agent traffic and never imports wireguard-go
// or gVisor; everything it shares with nodes is in wire.
//
// Trust: the server certificate is self-signed and reaches clients as a pin
// (netmap.CertPin) inside a join token or admin.cred. Nodes authenticate
// every request with their Ed25519 identity key (netmap.SignRequest); the
// administrator authenticates with the bearer secret in admin.cred. Network
// maps are signed with a separate Ed25519 key (netmap.Sign).
//
// Files by concern: coordinator.go (Config, New, Close), tls.go (certificate
// and keys on disk), store.go and bolt.go (state), ipam.go (addresses),
// tokens.go (join tokens), enroll.go and node.go (node requests), maps.go
// (per-node maps), stream.go (fan-out), admin.go and adminclient.go (admin
// API), http.go (middleware and error JSON), stats.go (counters),
// audit.go, audit_verify.go and audit_api.go (the tamper-evident audit log,
// its verifier, node reports and the admin audit API).
// policy_api.go, policy_store.go and policy_client.go (the access policy:
// versions, compiled filters and pruned peers in maps, admin endpoints; the
// document itself is package coordinator/policy).
package coordinator
