package overlay_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/transport/v3/vnet"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
)

// Hermetic NAT traversal: two nodes behind simulated NATs (pion's
// transport/vnet: routers, NAPT with RFC 4787 mapping and filtering
// behaviours, all in-process, no root) find, or correctly fail to find, a
// direct path. Each node's Config.PacketConn is a vnet socket on its LAN,
// so its WireGuard, disco and STUN traffic never touches a real socket;
// only the coordinator is real (HTTPS on 127.0.0.1). A vnet STUN responder
// on the WAN is the nodes' only relay (no TURN: a node on a PacketConn
// makes no allocation), so "not direct" shows as path kind "none".
//
// Addresses (documentation/benchmark ranges only, never routed for real):
// WAN 198.51.100.0/24 (STUN at .2, NAT public IPs .11 and .12), LANs
// 198.18.1.0/24 and 198.18.2.0/24.
//
// vnet NAT port mappings start at 49152 (0xC000) per NAT; hairpinning is
// not implemented, so two nodes behind one NAT only meet on the LAN.

var (
	// natCone is Linux MASQUERADE: endpoint-independent mapping,
	// address-and-port-dependent filtering (a "port-restricted cone").
	natCone = vnet.NATType{Mode: vnet.NATModeNormal, MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	// natRestricted filters on the remote address only ("restricted cone").
	natRestricted = vnet.NATType{Mode: vnet.NATModeNormal, MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointAddrDependent}
	// natSymmetric maps (and filters) per remote address and port.
	natSymmetric = vnet.NATType{Mode: vnet.NATModeNormal, MappingBehavior: vnet.EndpointAddrPortDependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
)

const vnetSTUNAddr = "198.51.100.2:3478"

// vnetLab is a WAN with a STUN responder and a coordinator on loopback.
type vnetLab struct {
	t     *testing.T
	wan   *vnet.Router
	lf    logging.LoggerFactory
	coord *testnet.Net
	relay wire.Relay // the STUN responder, as a map would list it (UDP only)
}

// newVNetLab builds the WAN; the coordinator starts in start. Building
// vnet routers and hosts races in pion (NewRouter and NewNet draw MAC
// addresses from an unguarded package counter): parallel tests hold
// build while they call newVNetLab, lan and host.
func newVNetLab(t *testing.T) *vnetLab {
	t.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	wan, err := vnet.NewRouter(&vnet.RouterConfig{Name: "wan", CIDR: "198.51.100.0/24", LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	l := &vnetLab{t: t, wan: wan, lf: lf}
	host := l.host(wan, "198.51.100.2")
	pc, err := host.ListenPacket("udp4", vnetSTUNAddr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); serveSTUN(pc) }()
	t.Cleanup(func() { pc.Close(); <-done })
	l.relay = wire.Relay{Name: "vstun", Addrs: []wire.RelayAddr{{Transport: wire.TransportUDP, Addr: netip.MustParseAddrPort(vnetSTUNAddr)}}}
	return l
}

// lan adds a LAN router behind a NAT of type nat with public IP public.
func (l *vnetLab) lan(name, cidr, public string, nat vnet.NATType) *vnet.Router {
	l.t.Helper()
	r, err := vnet.NewRouter(&vnet.RouterConfig{Name: name, CIDR: cidr, StaticIPs: []string{public}, NATType: &nat, LoggerFactory: l.lf})
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.wan.AddRouter(r); err != nil {
		l.t.Fatal(err)
	}
	return r
}

// host adds a host with address ip to r.
func (l *vnetLab) host(r *vnet.Router, ip string) *vnet.Net {
	l.t.Helper()
	n, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
	if err != nil {
		l.t.Fatal(err)
	}
	if err := r.AddNet(n); err != nil {
		l.t.Fatal(err)
	}
	return n
}

// start starts the routers and the coordinator; call it once every
// router and host is added.
func (l *vnetLab) start() {
	l.t.Helper()
	if err := l.wan.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { l.wan.Stop() })
	l.coord = testnet.New(l.t)
}

// node starts a node called name whose UDP traffic is a vnet socket on
// host at ip:41641, with the lab's STUN responder as its only relay.
func (l *vnetLab) node(name string, host *vnet.Net, ip string) *overlay.Node {
	l.t.Helper()
	pc, err := host.ListenPacket("udp4", ip+":41641")
	if err != nil {
		l.t.Fatal(err)
	}
	cfg := l.coord.NodeConfig(name)
	cfg.PacketConn = pc
	nd := l.coord.StartNodeConfig(cfg)
	if got, want := nd.Status().Listen, ip+":41641"; got != want {
		l.t.Fatalf("%s listens on %s, want the vnet address %s", name, got, want)
	}
	return nd
}

// serveSTUN answers binding requests on pc with the source's address
// (RFC 8489 XOR-MAPPED-ADDRESS) until pc is closed.
func serveSTUN(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		ua := from.(*net.UDPAddr)
		resp, err := stun.Build(req, stun.BindingSuccess, &stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
		if err != nil {
			continue
		}
		_, _ = pc.WriteTo(resp.Raw, from)
	}
}

// mappedEndpoint waits for nd to publish an endpoint on public (its
// STUN-mapped address behind its NAT) and returns it.
func mappedEndpoint(t *testing.T, nd *overlay.Node, public string) netip.AddrPort {
	t.Helper()
	ip := netip.MustParseAddr(public)
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, ap := range nd.Self().Endpoints {
			if ap.Addr() == ip {
				return ap
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s published no endpoint on %s: %v", nd.Self().Name, public, nd.Self().Endpoints)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitNotDirect waits until from's path to to has settled on "not direct"
// after its probe rounds (reason "no direct probe answered") and satisfies
// ok, failing if it is ever direct. The path can settle on the candidates
// of an older map first (the LAN address alone, before the map with the
// peer's mapped address arrives); ok waits for the one the test expects.
func waitNotDirect(t *testing.T, from *overlay.Node, to string, within time.Duration, ok func(*overlay.PathStatus) bool) *overlay.PathStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ps := peerPath(from, to)
		if ps != nil && ps.Kind == "direct" {
			b, _ := json.Marshal(ps)
			t.Fatalf("%s → %s: path %s: claims direct where no direct path exists", from.Self().Name, to, b)
		}
		if ps != nil && strings.HasPrefix(ps.Reason, "no direct probe answered") && ok(ps) {
			return ps
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(ps)
			t.Fatalf("%s → %s: path %s, want not direct after the probe rounds within %v", from.Self().Name, to, b, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// echoOverlay sends a checksummed payload from a to b's TCP echo server
// over the overlay and checks it comes back intact.
func echoOverlay(t *testing.T, a, b *overlay.Node) {
	t.Helper()
	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp", b.Self().Name+":7000")
	if err != nil {
		t.Fatalf("dial over the direct path: %v", err)
	}
	defer c.Close()
	payload := make([]byte, 256<<10)
	rng := rand.New(rand.NewPCG(7, 9))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(payload)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		errc <- err
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if sum := sha256.Sum256(got); !bytes.Equal(sum[:], want[:]) {
		t.Fatal("echoed payload checksum differs")
	}
}

// TestVNetTraversal runs pairs of nodes behind simulated NATs. Each case
// asserts one deterministic outcome:
//
//   - cone ↔ cone (Linux MASQUERADE both sides): both sides verify the
//     direct path to the peer's STUN-mapped address, because the mapping
//     is the same towards every destination: each side's ping opens its
//     own filter for the peer's mapped address, and the next round of the
//     other side gets through. A TCP echo then runs on it.
//   - symmetric ↔ symmetric: every destination gets its own mapping and
//     only that destination may answer on it, so the mapped addresses STUN
//     reports are useless to the peer: no ping ever arrives, none is
//     answered, and the path is not direct; its reason says so.
//   - cone ↔ symmetric: the same outcome. The symmetric side's pings leave
//     on a new mapping (port) that the port-restricted cone never sent to,
//     so its NAT drops them; the cone side's pings go to the symmetric
//     side's STUN mapping, which only the STUN server may use.
//   - restricted cone ↔ symmetric: direct, through a peer-reflexive
//     candidate. The restricted cone filters on the remote IP only, and
//     after it has pinged the symmetric NAT's IP it lets in the symmetric
//     side's pings from their new port; that source is learnt, pinged and
//     verified, and the pong to the cone's mapped address verifies the
//     other direction.
//   - both behind one cone NAT: direct on the LAN addresses (vnet does
//     not hairpin, so the mapped addresses never answer).
func TestVNetTraversal(t *testing.T) {
	type want int
	const (
		wantDirectMapped    want = iota // both: direct to the peer's published mapped address
		wantNotDirect                   // both: no direct path, none claimed
		wantDirectReflexive             // cone side: direct to a learnt port on the peer's NAT; other side: mapped
		wantDirectLAN                   // both: direct to the peer's LAN address
	)
	cases := []struct {
		name string
		natA vnet.NATType
		natB *vnet.NATType // nil: bravo shares alpha's LAN
		want want
	}{
		{"cone-cone", natCone, &natCone, wantDirectMapped},
		{"symmetric-symmetric", natSymmetric, &natSymmetric, wantNotDirect},
		{"cone-symmetric", natCone, &natSymmetric, wantNotDirect},
		{"restricted-symmetric", natRestricted, &natSymmetric, wantDirectReflexive},
		{"same-lan", natCone, nil, wantDirectLAN},
	}
	var build sync.Mutex // see newVNetLab
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			build.Lock()
			lab := newVNetLab(t)
			const pubA, pubB = "198.51.100.11", "198.51.100.12"
			lanA := lab.lan("lan-a", "198.18.1.0/24", pubA, tc.natA)
			hostA := lab.host(lanA, "198.18.1.10")
			ipB, pubBEff := "198.18.2.10", pubB
			var hostB *vnet.Net
			if tc.natB == nil {
				ipB, pubBEff = "198.18.1.11", pubA
				hostB = lab.host(lanA, ipB)
			} else {
				hostB = lab.host(lab.lan("lan-b", "198.18.2.0/24", pubB, *tc.natB), ipB)
			}
			build.Unlock()
			lab.start()
			a := lab.node("alpha", hostA, "198.18.1.10")
			b := lab.node("bravo", hostB, ipB)
			testnet.WaitPeers(t, a, b)
			start := time.Now()
			for _, nd := range []*overlay.Node{a, b} {
				nd.SetRelaysForTest([]wire.Relay{lab.relay})
			}
			mapA, mapB := mappedEndpoint(t, a, pubA), mappedEndpoint(t, b, pubBEff)
			if st := a.Status(); st.Paths.Relayed != "" {
				t.Fatalf("node on a PacketConn made a TURN allocation: %+v", st.Paths)
			}

			switch tc.want {
			case wantDirectMapped, wantDirectLAN, wantDirectReflexive:
				wantA, wantB := mapB.String(), mapA.String()
				if tc.want == wantDirectLAN {
					wantA, wantB = ipB+":41641", "198.18.1.10:41641"
				}
				psA := waitPath(t, a, "bravo", "direct", 15*time.Second)
				psB := waitPath(t, b, "alpha", "direct", 15*time.Second)
				t.Logf("direct after %v: alpha → %s, bravo → %s", time.Since(start).Round(time.Millisecond), psA.Endpoint, psB.Endpoint)
				if tc.want == wantDirectReflexive {
					// alpha reaches bravo's symmetric NAT on the port bravo's
					// pings came from, not the one STUN saw.
					ep := netip.MustParseAddrPort(psA.Endpoint)
					if ep.Addr() != mapB.Addr() || ep == mapB || !slices.Contains(psA.Candidate, psA.Endpoint) {
						t.Fatalf("alpha → bravo: %+v, want a learnt port on %s other than the mapped %s", *psA, mapB.Addr(), mapB)
					}
					wantA = psA.Endpoint
				}
				if psA.Endpoint != wantA || psB.Endpoint != wantB || psA.Reason != "" || psB.Reason != "" {
					t.Fatalf("paths alpha → %+v, bravo → %+v; want direct to %s and %s", *psA, *psB, wantA, wantB)
				}
				echoOverlay(t, a, b)
				echoOverlay(t, b, a)
				if ps := peerPath(a, "bravo"); ps == nil || ps.Kind != "direct" || ps.Endpoint != wantA {
					t.Fatalf("alpha → bravo after the echo: %+v", ps)
				}
			case wantNotDirect:
				for _, pair := range [][2]*overlay.Node{{a, b}, {b, a}} {
					peerMapped := mapB
					if pair[1] == a {
						peerMapped = mapA
					}
					ps := waitNotDirect(t, pair[0], pair[1].Self().Name, 15*time.Second, func(ps *overlay.PathStatus) bool {
						return slices.Contains(ps.Candidate, peerMapped.String())
					})
					if ps.Kind != "none" || !strings.Contains(ps.Reason, "no relay address") {
						t.Fatalf("%s → %s: %+v; want kind none, the peer's mapped %s among the candidates, a reason naming the missing relay", pair[0].Self().Name, pair[1].Self().Name, *ps, peerMapped)
					}
				}
				t.Logf("settled not direct after %v: %s", time.Since(start).Round(time.Millisecond), peerPath(a, "bravo").Reason)
				time.Sleep(time.Second) // a late pong would show here
				for _, nd := range []*overlay.Node{a, b} {
					st := nd.Status()
					if st.Paths.ProbesSent == 0 || st.Paths.ProbesAnswered != 0 {
						t.Fatalf("%s: probes %d sent, %d answered; want some sent and none answered", nd.Self().Name, st.Paths.ProbesSent, st.Paths.ProbesAnswered)
					}
				}
				for _, pair := range [][2]*overlay.Node{{a, b}, {b, a}} {
					if ps := peerPath(pair[0], pair[1].Self().Name); ps == nil || ps.Kind == "direct" {
						t.Fatalf("%s → %s became %+v", pair[0].Self().Name, pair[1].Self().Name, ps)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				if _, err := a.Ping(ctx, "bravo"); err == nil {
					t.Fatalf("ping across symmetric NATs without a relay: err %v, want a timeout", err)
				}
			}
		})
	}
}

// TestVNetBindPacketConn: a Bind on a vnet PacketConn exchanges datagrams
// with a real vnet peer, survives Close/Open (as wireguard-go's Up does),
// reports closed receives as net.ErrClosed, and never closes the conn.
func TestVNetBindPacketConn(t *testing.T) {
	lf := logging.NewDefaultLoggerFactory()
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "198.51.100.0/24", LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	var nets []*vnet.Net
	for _, ip := range []string{"198.51.100.20", "198.51.100.21"} {
		n, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
		if err != nil {
			t.Fatal(err)
		}
		if err := wan.AddNet(n); err != nil {
			t.Fatal(err)
		}
		nets = append(nets, n)
	}
	if err := wan.Start(); err != nil {
		t.Fatal(err)
	}
	defer wan.Stop()
	pc, err := nets[0].ListenPacket("udp4", "198.51.100.20:41641")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	peer, err := nets[1].ListenPacket("udp4", "198.51.100.21:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAP := netip.MustParseAddrPort("198.51.100.21:5000")

	b := overlay.NewBind(overlay.BindConfig{PacketConn: pc, Logger: testnet.Logger(t)})
	for round := range 2 {
		fns, port, err := b.Open(0)
		if err != nil || len(fns) != 1 || port != 41641 || b.LocalAddr().String() != "198.51.100.20:41641" {
			t.Fatalf("open %d: %d funcs, port %d, local %s, err %v", round, len(fns), port, b.LocalAddr(), err)
		}
		ep, err := b.ParseEndpoint(peerAP.String())
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Send([][]byte{[]byte("one"), []byte("two")}, ep); err != nil {
			t.Fatal(err)
		}
		if err := b.SendTTL([]byte("ttl"), peerAP, 2); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		for _, want := range []string{"one", "two", "ttl"} {
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := peer.ReadFrom(buf)
			if err != nil || string(buf[:n]) != want || from.String() != "198.51.100.20:41641" {
				t.Fatalf("peer got %q from %v (%v), want %q", buf[:n], from, err, want)
			}
		}
		if _, err := peer.WriteTo([]byte("back"), pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		bufs, sizes, eps := [][]byte{make([]byte, 64), make([]byte, 64)}, make([]int, 2), make([]conn.Endpoint, 2)
		n, err := fns[0](bufs, sizes, eps)
		if err != nil || n != 1 || string(bufs[0][:sizes[0]]) != "back" || eps[0].DstToString() != peerAP.String() {
			t.Fatalf("receive: n %d err %v", n, err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := fns[0](bufs, sizes, eps)
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("blocked receive after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end a blocked receive")
		}
		if err := b.Send([][]byte{[]byte("x")}, ep); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("send on a closed Bind: %v", err)
		}
	}
	if st := b.Stats(); st.TxPackets != 6 || st.RxPackets != 2 || st.RxErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}
