package proxy

import (
	"time"

	"github.com/agentnet/agentnet/internal/connlimit"
)

// Timing of the proxies and the SOCKS5 wire numbers (RFC 1928).

// Defaults for SOCKS5Config.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDialTimeout      = 30 * time.Second
)

// Defaults of the connection caps in every front-end's config
// (MaxConnsPerSource, MaxConns).
const (
	DefaultMaxConnsPerSource = connlimit.DefaultPerSource // 256
	DefaultMaxConns          = connlimit.DefaultTotal     // 4096
)

// HTTP proxy upstream connections (HTTPProxy's transport).
const (
	upstreamIdleConns   = 16 // idle connections kept per upstream host
	upstreamIdleTimeout = 90 * time.Second
)

// Accept backoff after a transient error (EMFILE and friends): doubles from
// acceptBackoffMin to acceptBackoffMax, reset by the next accepted
// connection.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// udpResolveTimeout bounds resolving one datagram's destination name.
const udpResolveTimeout = 5 * time.Second

// maxUDPHeader is the largest SOCKS UDP request header we write: RSV(2)
// FRAG(1) ATYP(1) IPv6(16) PORT(2) (RFC 1928 §7).
const maxUDPHeader = 22

// SOCKS protocol constants, RFC 1928.
const (
	socksVersion = 0x05

	authNone         = 0x00 // §3 NO AUTHENTICATION REQUIRED
	authNoAcceptable = 0xff // §3 NO ACCEPTABLE METHODS

	cmdConnect      = 0x01 // §4
	cmdBind         = 0x02
	cmdUDPAssociate = 0x03

	atypIPv4   = 0x01 // §5
	atypDomain = 0x03
	atypIPv6   = 0x04

	repSucceeded          = 0x00 // §6
	repGeneralFailure     = 0x01
	repNotAllowed         = 0x02 // connection not allowed by ruleset
	repNetUnreachable     = 0x03
	repHostUnreachable    = 0x04
	repConnRefused        = 0x05
	repTTLExpired         = 0x06
	repCmdNotSupported    = 0x07
	repAddrTypeNotSupport = 0x08
)
