package netstack

// Sizes of the link's queues and batches, the stack's TCP buffers and
// listen backlog, and the header numbers the TCP segmenter writes.

// DefaultMTU is the MTU used when Config.MTU is zero: the IPv6 minimum
// (RFC 8200 §5), safe on any path after WireGuard's 80-byte overhead.
const DefaultMTU = 1280

// Queue bounds (see pktQueue). 4096 packets or 16 MiB, whichever first.
const (
	outQueuePackets = 4096
	outQueueBytes   = 16 << 20
	// batchSize is what BatchSize reports: wireguard-go allocates this many
	// buffers per Read and encrypts the batch in parallel.
	batchSize = 128
	// gsoMaxSize is the largest segment gVisor TCP may hand WritePackets.
	gsoMaxSize = 1 << 16
)

// TCP buffer sizes. gVisor's defaults (1 MiB) cap a single stream's
// bandwidth-delay product; auto-tuning (moderate receive buffer) grows the
// receive buffer up to the max.
const (
	tcpBufMin     = 4 << 10
	tcpBufDefault = 1 << 20
	tcpBufMax     = 8 << 20
)

// DefaultListenBacklog is Config.ListenBacklog's default. Accept takes
// connections off the queue without blocking on anything (refusals
// included), so the queue only absorbs bursts; gonet's own 4096 would let
// one listener hold 4096 unaccepted endpoints.
const DefaultListenBacklog = 256

// pingPayloadLen is the echo payload: 16 random bytes to match the reply.
const pingPayloadLen = 16

// IP and TCP header constants used by the splitter (RFC 791, RFC 8200,
// RFC 793).
const (
	ipv4MinHeaderLen = 20
	ipv6HeaderLen    = 40
	tcpMinHeaderLen  = 20
	protoTCP         = 6
	tcpFlagFIN       = 0x01
	tcpFlagPSH       = 0x08
	tcpChecksumOff   = 16
)
