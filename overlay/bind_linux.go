package overlay

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
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

		_, err := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		txOffload = err == nil

		// Kernels before 5.12 accept UDP_GRO but cannot read it back; we
		// only keep GRO when we can confirm it, and turn it off otherwise
		// so no coalesced read surprises a non-GRO receive path.
		if unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil {
			v, err := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO)
			rxOffload = err == nil && v == 1
			if !rxOffload {
				_ = unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 0)
			}
		}
	})
	return txOffload, rxOffload
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

// appendGSO appends a UDP_SEGMENT control message carrying segSize (a
// native-endian u16) to oob, if oob has the capacity.
func (b *Bind) appendGSO(oob []byte, segSize uint16) []byte {
	space := unix.CmsgSpace(2)
	if cap(oob)-len(oob) < space {
		return oob
	}
	start := len(oob)
	oob = oob[:start+space]
	c := oob[start:]
	clear(c)
	h := unix.Cmsghdr{Level: unix.SOL_UDP, Type: unix.UDP_SEGMENT}
	h.SetLen(unix.CmsgLen(2))
	copy(c, unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr))
	binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], segSize)
	return oob
}

// groSize finds the UDP_GRO control message (a native-endian int, see
// udp_cmsg_recv) and returns the segment size it carries.
func (b *Bind) groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO {
			switch {
			case len(data) >= 4:
				return int(binary.NativeEndian.Uint32(data))
			case len(data) >= 2:
				return int(binary.NativeEndian.Uint16(data))
			}
		}
		oob = rest
	}
	return 0
}

func (b *Bind) truncated(flags int) bool { return flags&unix.MSG_TRUNC != 0 }
