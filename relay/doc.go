// Package relay is agentnet's self-hosted TURN/STUN relay (pion/turn), the
// path between two nodes that cannot reach each other directly ('agentnet
// relay'). The node's side is relay/turnclient; what a coordinator needs to
// hand out credentials is relay/turncred; the diagnosis of a node's way to
// its relays is relay/netcheck.
//
// What a running Server does (New starts it, Close stops it):
//
//   - Start (server.go): it binds UDP and TCP on one port (Listen), and
//     optionally a TLS listener (TLSListen) whose self-signed certificate
//     and key live in DataDir and survive restarts (tls.go,
//     internal/pincert). It loads or makes the shared secret
//     (secret.go) and writes DataDir/relay.cred (turncred.Cred: addresses,
//     STUN alt address, TLS pin, secret) for the coordinator.
//   - Authenticate: nodes present TURN REST credentials the coordinator
//     minted from the shared secret (turncred). Server.auth refuses
//     sources in back-off after repeated bad passwords (authlimit.go),
//     malformed and expired usernames and credentials expiring more than
//     MaxCredentialTTL ahead, and hands pion the long-term key
//     (RFC 8489 §9.2.2) of the password derived again from the secret;
//     pion checks the message integrity.
//   - Allocate (relayed.go): each allocation gets a relayed UDP socket on
//     PublicIP (relayAddrs), tied to its node for the quota and the
//     bandwidth limit (onAllocationCreated).
//   - Relay, client to peer: pion unwraps the client's Send indication or
//     ChannelData and writes the payload to relayConn.WriteTo, which judges
//     the peer (refusals.go: never a special-purpose address, private,
//     CGNAT, loopback, link-local, multicast, reserved, in any IPv4
//     embedding, unless Allow opens it; never Deny prefixes or the relay
//     host's addresses), charges the node's bandwidth and counts. The
//     same judgement grants CreatePermission and ChannelBind (permit).
//   - Relay to TCP/TLS clients: each write has a deadline
//     (ClientWriteTimeout); a client that stopped reading is dropped.
//   - Relay, peer to client: relayConn.ReadFrom reads the relayed socket in
//     batches (recvmmsg, UDP GRO: relay/internal/udpbatch); pion frames
//     each payload for the client, and the frames for one UDP client are
//     gathered (turnSocket.WriteTo, relayConn.queue) and sent together
//     (sendmmsg, UDP GSO) before the next read would block.
//   - STUN: binding requests are answered on the main UDP port (pion) and
//     on a second "STUN alt" port (stunalt.go), so a node can tell its
//     NAT's mapping behaviour (RFC 4787 §4.1).
//   - Observe: refusals are counted by reason and logged once per (reason,
//     source) per interval; Stats is a snapshot, Collector exports it to
//     Prometheus (metrics.go).
//
// Lifetimes: every relayed socket, TCP/TLS connection, the STUN alt loop
// and the host address watcher is tracked in Server.wg; Close stops the listeners, closes every
// accepted connection and waits (briefly) for them all.
package relay
