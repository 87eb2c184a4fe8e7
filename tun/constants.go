package tun

import "time"

const (
	// defaultMTU is the MTU when Config.MTU is zero: the IPv6 minimum link
	// MTU (RFC 8200 §5). With WireGuard's 80 bytes of overhead the outer
	// packets fit any underlay path of 1360 bytes or more.
	defaultMTU = 1280
	// maxNameLen is IFNAMSIZ (16) minus the terminating NUL.
	maxNameLen = 15
	// minMTUv6 is the IPv6 minimum link MTU (RFC 8200 §5); below it the
	// kernel disables IPv6 on the link and drops its IPv6 addresses.
	minMTUv6 = 1280
	// minMTUv4 is the IPv4 minimum reassembly size hosts must accept
	// (RFC 791).
	minMTUv4 = 576
	// maxMTU is the largest MTU a TUN device accepts.
	maxMTU = 65535
)

// Timeouts of the kernel device (tun_linux.go).
const (
	// netlinkTimeout bounds every netlink request, so a wedged kernel
	// answer cannot hang Create or Close.
	netlinkTimeout = 10 * time.Second
	// drainTimeout bounds how long Close waits for wireguard-go's event
	// goroutines to finish after the tun.Device is closed.
	drainTimeout = 5 * time.Second
	// ipv6ReadyTimeout bounds how long Create waits for the kernel to make
	// the IPv6 addresses usable.
	ipv6ReadyTimeout = 2 * time.Second
)
