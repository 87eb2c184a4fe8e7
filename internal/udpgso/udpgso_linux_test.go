package udpgso

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestControlMessages(t *testing.T) {
	oob := AppendSegment(make([]byte, 0, SegmentSpace()), 1400)
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 || msgs[0].Header.Type != unix.UDP_SEGMENT ||
		binary.NativeEndian.Uint16(msgs[0].Data) != 1400 {
		t.Fatalf("UDP_SEGMENT message %x: %+v %v", oob, msgs, err)
	}
	if GROSize(oob) != 0 {
		t.Errorf("GROSize of a UDP_SEGMENT message = %d, want 0", GROSize(oob))
	}
	// A UDP_GRO message as the kernel writes it: a native-endian int.
	gro := make([]byte, unix.CmsgSpace(4))
	h := unix.Cmsghdr{Level: unix.SOL_UDP, Type: unix.UDP_GRO}
	h.SetLen(unix.CmsgLen(4))
	copy(gro, unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr))
	binary.NativeEndian.PutUint32(gro[unix.CmsgLen(0):], 1280)
	if got := GROSize(append(oob, gro...)); got != 1280 {
		t.Errorf("GROSize = %d, want 1280", got)
	}
	if !Truncated(unix.MSG_TRUNC) || Truncated(0) {
		t.Error("Truncated")
	}
}
