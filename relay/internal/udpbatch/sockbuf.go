package udpbatch

import "net"

// SocketBuffer is SO_RCVBUF/SO_SNDBUF of every relay UDP socket, the same
// as overlay.Bind's: a burst of relayed WireGuard packets must not
// overflow the kernel queue while the relay goroutine is descheduled.
const SocketBuffer = 7 << 20

// Tune sets large socket buffers on uc (best effort).
func Tune(uc *net.UDPConn) {
	_ = uc.SetReadBuffer(SocketBuffer)
	_ = uc.SetWriteBuffer(SocketBuffer)
	forceBuffers(uc, SocketBuffer)
}
