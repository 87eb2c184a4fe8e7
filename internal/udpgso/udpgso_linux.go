package udpgso

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OOBSize holds one UDP_GRO or UDP_SEGMENT control message.
var OOBSize = unix.CmsgSpace(4)

// segmentSpace is the room one UDP_SEGMENT control message takes.
var segmentSpace = unix.CmsgSpace(2)

// Enable reports whether UDP_SEGMENT (GSO) is available on uc and, with
// wantGRO, turns on UDP GRO if the kernel confirms it. Kernels before 5.12
// accept UDP_GRO but cannot read it back; GRO is turned off again there,
// so no coalesced read surprises a receive path that does not expect one.
func Enable(uc *net.UDPConn, wantGRO bool) (gso, gro bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		s := int(fd)
		_, err := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		gso = err == nil
		if wantGRO && unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil {
			v, err := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO)
			gro = err == nil && v == 1
			if !gro {
				_ = unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 0)
			}
		}
	})
	return gso, gro
}

// SegmentSpace is the capacity AppendSegment needs beyond len(oob) to
// append without allocating.
func SegmentSpace() int { return segmentSpace }

// AppendSegment appends a UDP_SEGMENT control message carrying segSize (a
// native-endian u16) to oob.
func AppendSegment(oob []byte, segSize uint16) []byte {
	start := len(oob)
	oob = append(oob, make([]byte, segmentSpace)...)
	c := oob[start:]
	h := unix.Cmsghdr{Level: unix.SOL_UDP, Type: unix.UDP_SEGMENT}
	h.SetLen(unix.CmsgLen(2))
	copy(c, unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr))
	binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], segSize)
	return oob
}

// GROSize returns the segment size of a coalesced read (the UDP_GRO
// control message, a native-endian int, see udp_cmsg_recv), 0 if none.
func GROSize(oob []byte) int {
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

// Truncated reports MSG_TRUNC in a received message's flags.
func Truncated(flags int) bool { return flags&unix.MSG_TRUNC != 0 }
