package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"

	"tailscale.com/derp/derpserver"
	"tailscale.com/net/stun"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

// lab is a private tailnet on 127.0.0.1: Tailscale's test control server,
// one DERP server (HTTPS, self-signed) and a STUN responder, the latter two
// the only region of the DERP map the control server hands out. Nothing in
// it talks to anything but loopback.
type lab struct {
	controlURL string

	derp     *derpserver.Server
	derpHTTP *httptest.Server
	stun     net.PacketConn
	stunDone chan struct{} // closed when the STUN loop returned
	ctrlHTTP *httptest.Server
}

// startLab starts the three servers on 127.0.0.1. logf receives their logs.
func startLab(logf logger.Logf) (_ *lab, err error) {
	l := &lab{stunDone: make(chan struct{})}
	defer func() {
		if err != nil {
			l.close()
		}
	}()

	l.derp = derpserver.New(key.NewNode(), logf)
	derpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("derp: listen: %w", err)
	}
	l.derpHTTP = httptest.NewUnstartedServer(derpserver.Handler(l.derp))
	l.derpHTTP.Listener.Close()
	l.derpHTTP.Listener = derpLn
	l.derpHTTP.Config.ErrorLog = logger.StdLogger(logf)
	// DERP upgrades an HTTP/1.1 connection; keep HTTP/2 off.
	l.derpHTTP.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	l.derpHTTP.StartTLS()

	if l.stun, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("stun: listen: %w", err)
	}
	go l.serveSTUN()

	derpPort := derpLn.Addr().(*net.TCPAddr).Port
	stunPort := l.stun.LocalAddr().(*net.UDPAddr).Port
	ctrl := &testcontrol.Server{
		DERPMap: &tailcfg.DERPMap{
			// Only this region: no netcheck or DERP connection to Tailscale's.
			OmitDefaultRegions: true,
			Regions: map[int]*tailcfg.DERPRegion{
				900: {
					RegionID:   900,
					RegionCode: "lo",
					RegionName: "loopback",
					Nodes: []*tailcfg.DERPNode{{
						Name:             "900a",
						RegionID:         900,
						HostName:         "127.0.0.1",
						IPv4:             "127.0.0.1",
						IPv6:             "none",
						STUNPort:         stunPort,
						DERPPort:         derpPort,
						InsecureForTests: true, // httptest's self-signed certificate
						STUNTestIP:       "127.0.0.1",
					}},
				},
			},
		},
		AllNodesSameUser: true,
		Logf:             logf,
	}
	l.ctrlHTTP = httptest.NewUnstartedServer(ctrl)
	ctrl.HTTPTestServer = l.ctrlHTTP
	l.ctrlHTTP.Config.ErrorLog = logger.StdLogger(logf)
	l.ctrlHTTP.Start()
	if ip := l.ctrlHTTP.Listener.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		return nil, fmt.Errorf("control: listening on %v, not loopback", ip)
	}
	l.controlURL = l.ctrlHTTP.URL
	return l, nil
}

// serveSTUN answers binding requests with the sender's address (RFC 5389),
// so a node learns its 127.0.0.1 endpoint; it returns when l.stun is closed.
func (l *lab) serveSTUN() {
	defer close(l.stunDone)
	buf := make([]byte, 1500)
	for {
		n, from, err := l.stun.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || !stun.Is(buf[:n]) {
			continue
		}
		txid, err := stun.ParseBindingRequest(buf[:n])
		if err != nil {
			continue
		}
		ap := ua.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		_, _ = l.stun.WriteTo(stun.Response(txid, ap), from)
	}
}

// close stops every server that was started; blocked calls return.
func (l *lab) close() {
	if l.ctrlHTTP != nil {
		l.ctrlHTTP.CloseClientConnections()
		l.ctrlHTTP.Close()
	}
	if l.derpHTTP != nil {
		l.derpHTTP.CloseClientConnections()
		l.derpHTTP.Close()
	}
	if l.derp != nil {
		l.derp.Close()
	}
	if l.stun != nil {
		l.stun.Close()
		<-l.stunDone
	}
}
