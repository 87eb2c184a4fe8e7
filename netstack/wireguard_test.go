package netstack

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// wgPair is two Stacks joined by two real wireguard-go devices over
// bindtest's in-memory channel bind (no sockets at all).
type wgPair struct {
	a, b       *Stack
	devA, devB *device.Device
}

func newWGPair(tb testing.TB) *wgPair {
	tb.Helper()
	a, err := New(Config{Addrs: []netip.Addr{addrA4, addrA6}})
	if err != nil {
		tb.Fatal(err)
	}
	b, err := New(Config{Addrs: []netip.Addr{addrB4, addrB6}})
	if err != nil {
		tb.Fatal(err)
	}
	d := newWGPairFor(tb, a.TUN(), b.TUN())
	p := &wgPair{a: a, b: b, devA: d[0], devB: d[1]}
	tb.Cleanup(p.close)
	return p
}

func genKey(tb testing.TB) *ecdh.PrivateKey {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// configure sets d's key and its one peer. bindtest: bind 0 reaches bind 1
// at ChannelEndpoint 1, bind 1 reaches bind 0 at 2 (the "port" of a
// 127.0.0.1 address).

func configure(tb testing.TB, d *device.Device, self, peer *ecdh.PrivateKey, v4, v6 netip.Addr, endpointPort int) {
	tb.Helper()
	cfg := fmt.Sprintf("private_key=%s\npublic_key=%s\nallowed_ip=%s/32\nallowed_ip=%s/128\nendpoint=127.0.0.1:%d\npersistent_keepalive_interval=0\n",
		hex.EncodeToString(self.Bytes()), hex.EncodeToString(peer.PublicKey().Bytes()), v4, v6, endpointPort)
	if err := d.IpcSet(cfg); err != nil {
		tb.Fatal(err)
	}
}

func (p *wgPair) close() {
	// device.Close closes the tun.Device first; Stack.Close must cope.
	p.devA.Close()
	p.devB.Close()
	p.a.Close()
	p.b.Close()
}

func TestWireGuardTransfer8MiB(t *testing.T) {
	p := newWGPair(t)
	start := time.Now()
	transfer(t, p.a, p.b, addrB4, 8<<20)
	t.Logf("8 MiB through wireguard-go in %v; sender %+v", time.Since(start), p.a.Stats())
	rtt, err := p.a.Ping(testCtx(t), addrB6)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ping over WireGuard (IPv6): %v", rtt)
}
