// Package netstack is agentnet's userspace TCP/IP stack: a gVisor stack
// whose single NIC is a batched wireguard-go tun.Device, plus Dial, Listen
// and Ping for Go programs that embed a node.
//
// # Data path
//
// Outbound (stack → WireGuard, tun.go Read): gVisor's TCP believes the link
// does TSO (link.go, SupportedGSO) and hands WritePackets segments of up to
// 64 KiB. WritePackets only queues them in a bounded queue (queue.go; full
// means drop and count, gVisor is never blocked). Read blocks until one
// packet is queued, then fills the caller's whole batch without blocking
// again, cutting large segments into MTU-sized packets with correct
// lengths, IDs, sequence numbers, flags and checksums (gso.go). One 64 KiB
// segment is ~50 packets at MTU 1280, so a single Read routinely returns a
// full batch that wireguard-go encrypts in parallel and sends with one
// sendmmsg / UDP GSO call.
//
// Inbound (WireGuard → stack, tun.go Write): each batch of decrypted
// packets goes through gVisor's GRO (pkg/tcpip/stack/gro), which merges
// consecutive in-order segments of a TCP flow into one large segment, so
// gVisor's TCP processes a few big segments instead of many small ones.
// GRO is flushed at the end of each batch.
//
// Compared with wireguard-go's tun/netstack (one packet per Read, one
// goroutine hand-off per packet, MSS-sized segments end to end), the
// per-packet cost moves out of gVisor's TCP and into a memcpy.
//
// # Inbound connections
//
// ListenTCP's listeners share the stack's caps (Config.MaxConnsPerSource,
// MaxConns): Accept resets (RST) and counts each connection over a cap and
// returns the next one within them, so a flood from one peer neither grows
// without bound nor blocks the accept loop; a connection holds its slot
// until Close. Connections not yet accepted, half-open or queued, are
// bounded by each listener's backlog (Config.ListenBacklog; past it gVisor
// sends SYN cookies and drops handshakes the queue cannot take).
//
// # Lifetime
//
// New starts the stack; TUN returns its device for device.NewDevice;
// Close closes the device, every endpoint and the stack, and waits for
// gVisor's goroutines. The package itself starts no goroutines.
package netstack
