package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// association is one UDP ASSOCIATE (RFC 1928 §7). It lives as long as the
// TCP control connection. Datagrams are accepted only from the control
// connection's client IP (and port, if the client named one in its
// request); replies go to the last such source.
type association struct {
	s        *SOCKS5
	clientIP netip.Addr
	wantPort uint16 // 0: any port from clientIP
	relay    *net.UDPConn
	ovpc     net.PacketConn // overlay side
	hostpc   net.PacketConn // outside side; nil unless AllowOutside
	client   atomic.Pointer[netip.AddrPort]
	names    map[string]target // only used by fromClient
}

// associate serves UDP ASSOCIATE. host/port is where the client says its
// datagrams will come from (0.0.0.0:0 when it does not know).
func (s *SOCKS5) associate(c net.Conn, host string, port uint16) {
	client := c.RemoteAddr().String()
	rap, lap := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	a := &association{s: s, clientIP: rap.Addr().Unmap(), names: make(map[string]target)}
	if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() && ip.Unmap() == a.clientIP {
		a.wantPort = port
	}

	relay, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lap.Addr(), 0)))
	if err != nil {
		s.log.Warn("udp associate failed", "client", client, "err", err)
		writeReply(c, repGeneralFailure, nil)
		return
	}
	a.relay = relay
	ovpc, err := s.cfg.Overlay.ListenPacket("udp", ":0")
	if err != nil {
		relay.Close()
		s.log.Warn("udp associate failed", "client", client, "err", fmt.Errorf("overlay socket: %w", err))
		writeReply(c, repGeneralFailure, nil)
		return
	}
	a.ovpc = ovpc
	if s.cfg.AllowOutside {
		if a.hostpc, err = net.ListenPacket("udp", ":0"); err != nil {
			relay.Close()
			ovpc.Close()
			s.log.Warn("udp associate failed", "client", client, "err", err)
			writeReply(c, repGeneralFailure, nil)
			return
		}
	}
	socks := []io.Closer{relay, ovpc}
	if a.hostpc != nil {
		socks = append(socks, a.hostpc)
	}
	closeAll := func() {
		for _, x := range socks {
			x.Close()
		}
	}
	for _, x := range socks {
		if !s.t.add(x) {
			closeAll()
			return
		}
	}
	defer func() {
		for _, x := range socks {
			s.t.remove(x)
		}
	}()
	if err := writeReply(c, repSucceeded, relay.LocalAddr()); err != nil {
		closeAll()
		return
	}
	c.SetDeadline(time.Time{})
	s.log.Debug("udp associate", "client", client, "relay", relay.LocalAddr().String())

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.fromClient() }()
	go func() { defer wg.Done(); a.fromRemote(a.ovpc) }()
	if a.hostpc != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.fromRemote(a.hostpc) }()
	}
	// §7: the association ends when the TCP connection does. Anything
	// the client sends on it is ignored.
	io.Copy(io.Discard, c)
	closeAll()
	wg.Wait()
}

// fromClient relays client datagrams to their destinations.
func (a *association) fromClient() {
	buf := make([]byte, 64<<10)
	for {
		n, src, err := a.relay.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.s.log.Debug("udp relay read failed", "err", err)
			}
			return
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if src.Addr() != a.clientIP || (a.wantPort != 0 && src.Port() != a.wantPort) {
			continue // not our client: drop
		}
		host, port, payload, err := parseUDPHeader(buf[:n])
		if err != nil {
			a.s.log.Debug("udp datagram dropped", "client", src.String(), "reason", err.Error())
			continue
		}
		a.client.Store(&src)
		tgt, err := a.route(host, port)
		if err != nil {
			a.s.log.Debug("udp datagram dropped", "client", src.String(), "endpoint", host, "err", err)
			continue
		}
		pc := a.ovpc
		if !tgt.overlay {
			pc = a.hostpc
		}
		if _, err := pc.WriteTo(payload, net.UDPAddrFromAddrPort(tgt.ap)); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			a.s.log.Debug("udp send failed", "endpoint", tgt.ap.String(), "err", err)
		}
	}
}

// route resolves a datagram destination, caching per association so a
// flow does not resolve every datagram.
func (a *association) route(host string, port uint16) (target, error) {
	t, ok := a.names[host]
	if !ok {
		ctx, cancel := context.WithTimeout(a.s.ctx, udpResolveTimeout)
		defer cancel()
		var err error
		t, err = a.s.r.route(ctx, host, 0)
		if err != nil {
			return target{}, err
		}
		if !t.ap.IsValid() { // outside name: host resolver
			h, _, _ := splitPort(t.name)
			ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
			if err != nil || len(ips) == 0 {
				return target{}, fmt.Errorf("%w %q: %v", ErrUnknownName, host, err)
			}
			t.ap = netip.AddrPortFrom(ips[0].Unmap(), 0)
		}
		if len(a.names) > 1024 {
			clear(a.names)
		}
		a.names[host] = t
	}
	t.ap = netip.AddrPortFrom(t.ap.Addr(), port)
	return t, nil
}

// fromRemote relays datagrams from pc back to the client, prefixed with
// the SOCKS UDP header naming their source.
func (a *association) fromRemote(pc net.PacketConn) {
	buf := make([]byte, maxUDPHeader+64<<10)
	for {
		n, from, err := pc.ReadFrom(buf[maxUDPHeader:])
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.s.log.Debug("udp remote read failed", "err", err)
			}
			return
		}
		dst := a.client.Load()
		if dst == nil {
			continue // no client datagram yet: nowhere to send
		}
		hdr := appendAddr([]byte{0, 0, 0}, addrPort(from))
		start := maxUDPHeader - len(hdr)
		copy(buf[start:], hdr)
		if _, err := a.relay.WriteToUDPAddrPort(buf[start:maxUDPHeader+n], *dst); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			a.s.log.Debug("udp relay write failed", "client", dst.String(), "err", err)
		}
	}
}

// parseUDPHeader splits a §7 UDP request: RSV(2) FRAG(1) ATYP DST.ADDR
// DST.PORT DATA. Fragments (FRAG != 0) are not supported and rejected.
func parseUDPHeader(b []byte) (host string, port uint16, payload []byte, err error) {
	if len(b) < 4 {
		return "", 0, nil, errors.New("short datagram")
	}
	if b[2] != 0 {
		return "", 0, nil, errors.New("fragmented datagram")
	}
	r := &sliceReader{b: b[4:]}
	host, port, err = readAddr(r, b[3])
	if err != nil {
		return "", 0, nil, err
	}
	return host, port, r.b, nil
}

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
