package overlay

import (
	"net"

	"golang.org/x/sys/unix"

	"github.com/agentnet/agentnet/internal/udpgso"
)

// Linux socket tuning for Bind (see bindPlatform in bind.go): forced buffer
// sizes, SO_MARK, and UDP GSO/GRO (udp(7): UDP_SEGMENT, UDP_GRO).

var _ bindPlatform = (*Bind)(nil)

func (b *Bind) tuneSocket(uc *net.UDPConn, bufSize int) (txOffload, rxOffload bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		s := int(fd)
		// Beyond net.core.{r,w}mem_max when we hold CAP_NET_ADMIN; the
		// portable SetReadBuffer/SetWriteBuffer already did the rest.
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufSize)
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufSize)
	})
	return udpgso.Enable(uc, true)
}

func (b *Bind) setSocketMark(uc *net.UDPConn, mark uint32) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	}); err != nil {
		return err
	}
	return serr
}

// appendGSO appends a UDP_SEGMENT control message carrying segSize to oob,
// if oob has the capacity (the batch's control buffers are sized for it).
func (b *Bind) appendGSO(oob []byte, segSize uint16) []byte {
	if cap(oob)-len(oob) < udpgso.SegmentSpace() {
		return oob
	}
	return udpgso.AppendSegment(oob, segSize)
}

func (b *Bind) groSize(oob []byte) int   { return udpgso.GROSize(oob) }
func (b *Bind) truncated(flags int) bool { return udpgso.Truncated(flags) }
