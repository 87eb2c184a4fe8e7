//go:build !linux

package udpgso

import "net"

// OOBSize is 0: no control messages without Linux offloads.
var OOBSize = 0

func Enable(*net.UDPConn, bool) (gso, gro bool) { return false, false }
func SegmentSpace() int                         { return 0 }
func AppendSegment(oob []byte, _ uint16) []byte { return oob }
func GROSize([]byte) int                        { return 0 }
func Truncated(int) bool                        { return false }
