package overlay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/agentnet/agentnet/overlay/netmap"
)

// turnFixture is a minimal pion TURN server on 127.0.0.1 (UDP, TCP and
// TLS) with TURN REST credentials, standing in for relay.Server in the
// client's tests.
type turnFixture struct {
	srv    *turn.Server
	secret string
	relay  netmap.Relay
}

func startTURNFixture(t testing.TB) *turnFixture {
	t.Helper()
	const secret = "fixture-secret"
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t)
	tl, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	gen := func() turn.RelayAddressGenerator {
		return &turn.RelayAddressGeneratorStatic{RelayAddress: net.ParseIP("127.0.0.1"), Address: "127.0.0.1"}
	}
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:             "agentnet",
		AuthHandler:       turn.LongTermTURNRESTAuthHandler(secret, nil),
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: udp, RelayAddressGenerator: gen()}},
		ListenerConfigs: []turn.ListenerConfig{
			{Listener: tcp, RelayAddressGenerator: gen()},
			{Listener: tl, RelayAddressGenerator: gen()},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	user, pass, err := turn.GenerateLongTermTURNRESTCredentials(secret, "node", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	return &turnFixture{srv: srv, secret: secret, relay: netmap.Relay{
		Name: "fixture",
		Addrs: []netmap.RelayAddr{
			{Transport: netmap.TransportUDP, Addr: udp.LocalAddr().(*net.UDPAddr).AddrPort()},
			{Transport: netmap.TransportTCP, Addr: netip.MustParseAddrPort(tcp.Addr().String())},
			{Transport: netmap.TransportTLS, Addr: netip.MustParseAddrPort(tl.Addr().String())},
		},
		TLSPin:   netmap.CertPin(leaf),
		Username: user, Password: pass, Expires: time.Now().Add(time.Hour),
	}}
}

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fixture relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// StartRelayForTest starts a pion TURN server on 127.0.0.1 (UDP, TCP, TLS)
// and returns it as a map would list it, with a valid credential.
func StartRelayForTest(t testing.TB) netmap.Relay { return startTURNFixture(t).relay }
