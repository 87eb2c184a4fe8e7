package relay

import "net"

// socketBuffer is SO_RCVBUF/SO_SNDBUF of every relay UDP socket, the same
// as overlay.Bind's: a burst of relayed WireGuard packets must not
// overflow the kernel queue while the relay goroutine is descheduled.
const socketBuffer = 7 << 20

// tuneUDP sets large socket buffers on uc (best effort).
func tuneUDP(uc *net.UDPConn) {
	_ = uc.SetReadBuffer(socketBuffer)
	_ = uc.SetWriteBuffer(socketBuffer)
	forceBuffers(uc, socketBuffer)
}
