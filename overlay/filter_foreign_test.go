package overlay

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/agentnet/agentnet/wire"
)

// Issue 17 item 7: in kernel TUN mode the host can route a packet with any
// inner source into the TUN. The outbound filter sends only packets from
// this node's own overlay addresses; the rest are dropped and counted as
// invalid (foreign_source) and logged at most once per interval.

func TestFilterForeignSourceTable(t *testing.T) {
	allowAll := testFilter()
	cases := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"own v4 source", tcpPkt(fSelf4, fPeer2, 50000, 22, tcpSYN), true},
		{"own v6 source", udpPkt(fSelf6, fV6P2, 40000, 5000), true},
		{"peer's address as source", tcpPkt(fPeer3, fPeer2, 50000, 22, tcpSYN), false},
		{"underlay source", tcpPkt(netip.MustParseAddr("192.168.1.7"), fPeer2, 50000, 22, tcpSYN), false},
		{"foreign v6 source", udpPkt(netip.MustParseAddr("fd7a:115c:a1e0::9"), fV6P2, 40000, 5000), false},
		{"foreign source outside the overlay", tcpPkt(fStranger, fPeer2, 5353, 53, tcpSYN), false},
		{"foreign source, echo", echoPkt(fPeer5, fPeer2, 7, false), false},
	}
	e := newTestFilter(t, allowAll, filterConfig{})
	var denied uint64
	for _, c := range cases {
		if got := e.check(dirOut, c.pkt); got != c.want {
			t.Errorf("%s: allowed %v, want %v", c.name, got, c.want)
		}
		if !c.want {
			denied++
		}
	}
	if got := e.f.stats.invalid[dirOut][reasonForeignSrc].Load(); got != denied {
		t.Fatalf("foreign_source counter %d, want %d", got, denied)
	}
	var found bool
	for _, s := range e.f.status().Invalid {
		if s.Direction == "outbound" && s.Reason == "foreign_source" && s.Packets == denied {
			found = true
		}
	}
	if !found {
		t.Fatalf("status lacks outbound foreign_source %d: %+v", denied, e.f.status().Invalid)
	}
	// Inbound packets are judged by their destination, as before.
	if !e.check(dirIn, tcpPkt(fPeer2, fSelf4, 40000, 80, tcpSYN)) {
		t.Fatal("inbound packet from a peer denied")
	}
}

func TestFilterForeignSourceLoggedOncePerInterval(t *testing.T) {
	e := newTestFilter(t, testFilter(), filterConfig{LogInterval: 10 * time.Second})
	pkt := tcpPkt(fStranger, fPeer2, 5353, 53, tcpSYN)
	for range 100 {
		e.check(dirOut, pkt)
	}
	countLogs := func() int {
		n := 0
		for _, d := range e.logs.denials() {
			if d["reason"] == reasonText[reasonForeignSrc] {
				n++
			}
		}
		return n
	}
	if n := countLogs(); n != 1 {
		t.Fatalf("%d log lines for 100 foreign-source packets in one interval, want 1", n)
	}
	e.clock.Add(11 * time.Second)
	e.check(dirOut, pkt)
	if n := countLogs(); n != 2 {
		t.Fatalf("%d log lines after the interval, want 2", n)
	}
}

// TestFilterForeignSourceNotSent: a kernel-TUN-like node (a channel TUN
// under the filter, so the test plays the host routing packets into it)
// sends a packet from its own address and one from another address to a
// peer whose wireguard-go would accept both (its allowed IPs for the
// sender cover the foreign address): only the first arrives.
func TestFilterForeignSourceNotSent(t *testing.T) {
	a := newFilteredChannelNode(t, iA4, iA6, &wire.Filter{PolicyVersion: 1,
		Outbound: []wire.FilterRule{{Rule: "any", Peers: []string{"100.96.0.0/12"}, Protos: []string{"udp"}}}})
	b := newWGNode(t, iB4, iB6, nil, true)
	a.peer(t, b)
	// b would take anything from a's key in 100.96.0.0/24.
	cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=100.96.0.0/24\n",
		hex.EncodeToString(a.key.PublicKey().Bytes()), a.bind.LocalAddr())
	if err := b.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}

	foreign := testPkt{src: iC4, dst: iB4, proto: protoUDP, sport: 1111, dport: 9000, payload: []byte("foreign")}.build()
	own := testPkt{src: iA4, dst: iB4, proto: protoUDP, sport: 2222, dport: 9000, payload: []byte("own")}.build()
	a.ch.Outbound <- foreign
	a.ch.Outbound <- own

	select {
	case got := <-b.ch.Inbound:
		// One peer's packets stay in order: the foreign one was first.
		if !strings.HasSuffix(string(got), "own") {
			t.Fatalf("peer received %q first; want only the packet from a's own address", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("packet from a's own address not delivered")
	}
	select {
	case got := <-b.ch.Inbound:
		t.Fatalf("peer received a second packet %q", got)
	case <-time.After(200 * time.Millisecond):
	}
	if got := a.filter.stats.invalid[dirOut][reasonForeignSrc].Load(); got != 1 {
		t.Fatalf("foreign_source counter %d, want 1", got)
	}
}

// newFilteredChannelNode is a wgNode whose TUN is the packet filter over
// wireguard-go's channel TUN: the test writes what a kernel TUN would
// carry from the host.
func newFilteredChannelNode(t *testing.T, a4, a6 netip.Addr, nf *wire.Filter) *wgNode {
	t.Helper()
	n := &wgNode{a4: a4, a6: a6, logs: &logRecords{}, ch: tuntest.NewChannelTUN()}
	log := slog.New(n.logs)
	n.filter = newFilterDevice(n.ch.TUN(), filterConfig{Logger: log})
	n.filter.setFilter(nf, a4, a6)
	var err error
	if n.key, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	n.bind = NewBind(BindConfig{ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), Logger: log})
	n.dev = device.NewDevice(n.filter, n.bind, wgLogger(log, n.filter.wgLogged))
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(n.key.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.dev.Close() })
	return n
}
