//go:build !linux

package udpbatch

import "net"

func forceBuffers(*net.UDPConn, int) {}
