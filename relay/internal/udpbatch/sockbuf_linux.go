package udpbatch

import (
	"net"

	"golang.org/x/sys/unix"
)

// forceBuffers raises SO_RCVBUF/SO_SNDBUF beyond net.core.{r,w}mem_max when
// the process holds CAP_NET_ADMIN; without it the portable sizes set by
// Tune stand.
func forceBuffers(uc *net.UDPConn, size int) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
	})
}
