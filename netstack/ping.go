package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Ping sends one ICMP (IPv4) or ICMPv6 echo request to dst through the
// stack and returns the round-trip time of the matching reply. It uses a
// gVisor "ping socket" endpoint (like Linux's unprivileged ICMP sockets):
// gVisor picks the identifier and fills checksums; replies are matched by
// identifier (by gVisor) and by payload (here). It returns ctx's error if
// ctx ends first, and net.ErrClosed if the Stack closes.
func (s *Stack) Ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	dst = dst.Unmap()
	if !dst.IsValid() {
		return 0, fmt.Errorf("netstack: ping: invalid address")
	}
	if s.closed() {
		return 0, fmt.Errorf("netstack: ping %v: %w", dst, net.ErrClosed)
	}
	transProto, netProto := icmp.ProtocolNumber4, ipv4.ProtocolNumber
	if dst.Is6() {
		transProto, netProto = icmp.ProtocolNumber6, ipv6.ProtocolNumber
	}
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(transProto, netProto, &wq)
	if terr != nil {
		return 0, fmt.Errorf("netstack: ping %v: endpoint: %s", dst, terr)
	}
	defer ep.Close()
	entry, readable := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	// Echo header (type, code, checksum, ident, seq) then payload. The
	// ICMPv4 and ICMPv6 echo layouts agree (RFC 792, RFC 4443 §4.1).
	req := make([]byte, header.ICMPv4MinimumSize+pingPayloadLen)
	payload := req[header.ICMPv4MinimumSize:]
	rand.Read(payload)
	if dst.Is6() {
		header.ICMPv6(req).SetType(header.ICMPv6EchoRequest)
	} else {
		header.ICMPv4(req).SetType(header.ICMPv4Echo)
	}
	header.ICMPv4(req).SetSequence(1)

	to := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(dst.AsSlice())}
	start := time.Now()
	if _, terr := ep.Write(bytes.NewReader(req), tcpip.WriteOptions{To: &to}); terr != nil {
		return 0, fmt.Errorf("netstack: ping %v: write: %s", dst, terr)
	}
	var buf bytes.Buffer
	for {
		buf.Reset()
		_, terr := ep.Read(&buf, tcpip.ReadOptions{})
		if terr == nil {
			if isEchoReply(buf.Bytes(), dst.Is6(), payload) {
				return time.Since(start), nil
			}
			continue
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return 0, fmt.Errorf("netstack: ping %v: read: %s", dst, terr)
		}
		select {
		case <-readable:
		case <-ctx.Done():
			return 0, fmt.Errorf("netstack: ping %v: %w", dst, ctx.Err())
		case <-s.done:
			return 0, fmt.Errorf("netstack: ping %v: %w", dst, net.ErrClosed)
		}
	}
}

// isEchoReply reports whether msg (an ICMP message without IP header) is an
// echo reply carrying payload.
func isEchoReply(msg []byte, v6 bool, payload []byte) bool {
	if len(msg) < header.ICMPv4MinimumSize {
		return false
	}
	if v6 {
		if header.ICMPv6(msg).Type() != header.ICMPv6EchoReply {
			return false
		}
	} else if header.ICMPv4(msg).Type() != header.ICMPv4EchoReply {
		return false
	}
	return bytes.Equal(msg[header.ICMPv4MinimumSize:], payload)
}
