// Package proxy holds the front-ends that let unmodified programs use a
// node running in netstack (userspace) mode, where the overlay has no
// kernel interface and its addresses are reachable only through the node.
//
//   - SOCKS5 (socks5.go, socks5_udp.go): RFC 1928 without authentication,
//     CONNECT and UDP ASSOCIATE. Domain names are resolved by the node
//     (socks5h semantics), so "search" or "search.agents.internal" work.
//   - HTTPProxy (httpproxy.go): HTTP CONNECT tunnels and absolute-URI
//     proxying ("GET http://search.agents.internal:8080/x").
//   - Forward (forward.go): a local TCP port whose connections are carried
//     to one overlay destination ("127.0.0.1:9000=search:8080").
//   - Expose (expose.go): an overlay TCP port whose connections are carried
//     to one local service ("8080" or "80=127.0.0.1:8080").
//
// The package talks to the node only through the Overlay interface
// (overlay.go); it imports neither overlay, gVisor nor wireguard-go.
//
// # Destinations
//
// SOCKS5 and HTTPProxy carry traffic to the overlay only: a name the node
// cannot resolve is ErrUnknownName (SOCKS reply 0x04, HTTP 502) and an IP
// outside the overlay is ErrOutside (SOCKS reply 0x02, HTTP 403). With
// AllowOutside, both go through the host network instead (names through the
// host resolver).
//
// # Connection caps
//
// Each front-end caps the client connections it holds, per source address
// (MaxConnsPerSource, default 256) and in total (MaxConns, default 4096),
// in Accept (limit.go): a connection over a cap is reset and counted
// (ConnStats), and Accept goes on to the next without waiting for a slot.
//
// # Lifetime
//
// Each constructor starts serving before it returns. Close stops the
// listener, closes every connection and UDP socket the front-end holds
// (blocked reads and writes on them return net.ErrClosed), cancels dials in
// progress and waits for every goroutine the front-end started. Close is
// idempotent and safe to call concurrently.
//
// # Copying
//
// Connections are joined by copy.go: each direction is copied
// independently and, when one side finishes sending (EOF), the other side
// is half-closed (CloseWrite) so request/response protocols that rely on
// shutdown(SHUT_WR) keep working. An error in either direction closes both.
package proxy
