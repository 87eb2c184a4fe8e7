// Package udpgso holds the Linux UDP segmentation offloads (udp(7):
// UDP_SEGMENT for GSO on send, UDP_GRO on receive) that overlay.Bind and
// the relay's batched sockets share: probing and enabling them on a socket,
// writing the UDP_SEGMENT control message, and reading the segment size of
// a coalesced read. Elsewhere every function reports "no offload".
package udpgso
