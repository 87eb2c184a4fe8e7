package overlay

import "time"

// Timing and sizes of the node, its packet filter and its bind (peerBind
// and its parts: paths, probes, the handshake guard, the relay path, key
// rotation), and the wire-format numbers they read. The layouts of the
// messages we parse ourselves (disco.go, initiation.go) stay with their
// parsers.

// Node defaults (Config).
const (
	defaultMTU = 1280 // Config.MTU: the IPv6 minimum, so any path carries it
	// Config.MTU bounds: every node has an IPv6 address, and IPv6 needs
	// 1280 (RFC 8200 §5); a TUN device takes at most 65535.
	minMTU               = 1280
	maxMTU               = 65535
	defaultEnrollTimeout = 60 * time.Second
	// Reconnect backoff (backoff): attempt n waits n seconds up to
	// backoffSteps, then backoffMax; each wait is jittered to 50-100 %.
	backoffSteps = 6
	backoffMax   = 15 * time.Second
	// maxAdvertised bounds the interface addresses a node advertises as
	// its endpoints.
	maxAdvertised = 8
)

// Publishing candidates (publish.go): a check every publishEvery (and on
// every change), a retry publishRetry after a failed update; a
// coordinator's probe delay is capped at maxProbeDelay.
const (
	publishEvery  = 20 * time.Second
	publishRetry  = 2 * time.Second
	maxProbeDelay = 5 * time.Second
)

// Local API (localapi.go).
const (
	localPingTimeout   = 5 * time.Second // one /v1/ping
	localHeaderTimeout = 5 * time.Second
	localShutdownGrace = 500 * time.Millisecond // then in-flight requests are cut
	localClientTimeout = 15 * time.Second       // LocalClient's requests
)

// Returning a large map's garbage to the OS (memory.go).
const (
	freeMemoryMinPeers = 128 // smaller maps leave little garbage
	freeMemoryDelay    = 200 * time.Millisecond
	freeMemoryEvery    = time.Second
)

// Reporter defaults.
const (
	defaultReportInterval = 5 * time.Second
	reportQueue           = 1024 // events waiting to be sent
	// sessionExpired is when a WireGuard session is dead without a new
	// handshake: RejectAfterTime (WireGuard paper §6.1).
	sessionExpired = 180 * time.Second
)

// persistentKeepalive keeps NAT mappings warm (seconds).
const persistentKeepalive = 25

// Flow table defaults (FilterConfig).
const (
	defaultMaxFlows     = 32768
	defaultTCPTimeout   = 2 * time.Hour
	defaultUDPTimeout   = 3 * time.Minute
	defaultICMPTimeout  = 30 * time.Second
	defaultOtherTimeout = 10 * time.Minute

	flowShards = 16
	// evictSample is how many entries of a full shard are looked at to find
	// expired ones or the least recently used.
	evictSample = 32
)

// defaultDenyLogInterval is FilterConfig.LogInterval's default: each
// (source, reason) denial is logged once per interval.
const defaultDenyLogInterval = 10 * time.Second

// maxDenyKeys bounds the filter's table of (source, reason) pairs whose
// denials are being logged once per interval.
const maxDenyKeys = 4096

// rejectOffset is where rejects start in their buffer: room for the
// virtio-net header a kernel TUN device writes in front (wireguard-go's own
// offset, device.MessageTransportOffsetContent).
const rejectOffset = 16

// ICMP error sizes: the whole answer fits the minimum MTU of its family
// (RFC 1812 §4.3.2.3: 576 bytes; RFC 4443 §2.4(c): 1280 bytes).
const (
	maxICMPv4Error = 576
	maxICMPv6Error = 1280
)

// divertOffset leaves room for wireguard-go's virtio header on kernel writes.
const divertOffset = 16

// maxExtHeaders bounds the IPv6 extension header walk.
const maxExtHeaders = 8

// IP protocol numbers the filter knows (IANA "Assigned Internet Protocol
// Numbers").
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58

	// IPv6 extension headers walked over (RFC 8200 §4).
	protoHopByHop  = 0
	protoRouting   = 43
	protoFragment  = 44
	protoDestOpts  = 60
	protoNoNextHdr = 59
)

// TCP flags (RFC 9293 §3.1).
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// ICMP types the filter treats specially.
const (
	icmp4EchoReply    = 0
	icmp4Unreach      = 3
	icmp4Echo         = 8
	icmp4TimeExceed   = 11
	icmp4ParamProb    = 12
	icmp6Unreach      = 1
	icmp6PacketTooBig = 2
	icmp6TimeExceed   = 3
	icmp6ParamProb    = 4
	icmp6Echo         = 128
	icmp6EchoReply    = 129
)

// WireGuard message types (WireGuard paper §5.4: the first 4 bytes, little
// endian) and wireguard-go's handshake retry interval, REKEY_TIMEOUT.
const (
	wgMsgInitiation = 1
	wgMsgResponse   = 2
	wgMsgCookie     = 3
	wgMsgData       = 4
	wgRekeyTimeout  = 5 * time.Second
	// Message sizes (WireGuard paper §5.4.3-5.4.7; wireguard-go's
	// MessageResponseSize, MessageCookieReplySize, MessageTransportSize):
	// a data message is at least its 16-byte header and 16-byte tag.
	wgResponseSize = 92
	wgCookieSize   = 64
	wgDataMinSize  = 32
)

// peerEndpointPrefix starts the endpoint strings peerBind hands to
// wireguard-go: "peer:" + hex WireGuard public key.
const peerEndpointPrefix = "peer:"

// maxStrangers bounds the handshake guard's strangers table (an attacker
// can send from many addresses; the oldest entry is evicted).
const maxStrangers = 64

// Path checks and probing (paths.go, probe.go, pathtable.go).
const (
	probeTick       = 250 * time.Millisecond // the probe loop's tick
	pathTimeout     = 5 * time.Second        // a path without a pong for this long is dead
	activePingEvery = 2 * time.Second        // pings on the path in use
	slowRoundEvery  = 40 * time.Second       // from our last direct ping: > the 30 s UDP conntrack timeout plus skew, see probe.go
	pingExpiry      = 10 * time.Second
	maxLearned      = 8  // learned (peer-reflexive) candidates kept per peer
	maxPendingPings = 64 // pings per peer waiting for their pong
	// Pre-punching (probe.go): a ping with TTL prePunchTTL opens our own
	// NAT's mapping but expires before the peer's NAT. The full ping waits
	// at least prePunchLead, and for the peer's prePunched message (one
	// younger than prePunchFresh, well inside the 30 s a pre-punch keeps
	// its conntrack entry), or falls back: prePunchWait after the
	// pre-punch once the peer has answered over the relay since (a node
	// that predates prePunched), prePunchMax in any case, prePunchLead
	// when the peer has no relay path to agree over.
	prePunchTTL   = 2
	prePunchLead  = time.Second
	prePunchFresh = 15 * time.Second
	prePunchWait  = 3 * time.Second
	prePunchMax   = 10 * time.Second
)

// The relay path (relayconn.go): our allocation, kept by relayLoop.
const (
	allocQueue     = 4096             // packets from the allocation waiting for wireguard-go
	allocTimeout   = 3 * time.Second  // one allocation attempt per transport
	allocRetryStep = 5 * time.Second  // retry n waits n × step ...
	allocRetryMax  = time.Minute      // ... up to this
	relayLoopTick  = time.Second      // the relay loop's check of relays and permissions
	stunEvery      = 20 * time.Second // STUN binding requests to every relay
)

// Key rotation (rotate.go).
const (
	rotateTimeout = 30 * time.Second       // one rotation, update included
	rotateRetry   = time.Minute            // after a failed periodic rotation
	rekeySettle   = 150 * time.Millisecond // from the coordinator's answer to sending held initiations
)

// Reading strangers' handshake initiations (initlimit.go): the X25519 and
// AEAD that find a lazy peer's key run at most initReadRate a second
// (burst initReadBurst) in all and initReadPerSrc (burst the same) per
// source address, and wait in a queue of initReadQueue. At ~50 µs a read
// that is under 1 % of a core, whatever arrives.
const (
	initReadRate    = 200
	initReadBurst   = 50
	initReadPerSrc  = 10
	initReadSources = 4096 // per-source buckets kept; past that they start over
	initReadQueue   = 64
	// initReadKnownSlots of initQ are kept for initiations from map peers'
	// candidate addresses: strangers fill it only up to the rest.
	initReadKnownSlots = 8
	// Strangers' initiations passed on to wireguard-go: initPassRate a
	// second, burst initPassBurst, the rest dropped. Each costs
	// wireguard-go one X25519 (~50-100 µs) even when it names no peer,
	// and past 1/8 of its queue of 1,024 a cookie reply, which costs a
	// new peer a 5 s retry; this keeps a flood's share well under 1 % of a
	// core. Initiations from peers' known paths and published candidates
	// are not limited here, so only a configured peer roaming to an
	// unpublished address needs this pass.
	initPassRate  = 100
	initPassBurst = 32
)
