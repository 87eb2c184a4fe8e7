//go:build !linux

package relay

import "net"

const oobSize = 0

func udpOffload(*net.UDPConn, bool) (gso, gro bool) { return false, false }
func appendGSO(oob []byte, _ uint16) []byte         { return oob }
func groSize([]byte) int                            { return 0 }
func truncated(int) bool                            { return false }
