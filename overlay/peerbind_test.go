package overlay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

const pbMsgResponse, pbMsgData = 2, 4 // WireGuard message types

var (
	pbHigh = [32]byte(bytes.Repeat([]byte{0xff}, 32)) // wins against pbLow
	pbLow  = [32]byte(bytes.Repeat([]byte{0x01}, 32))
)

// pbPacket is a fake 148-byte WireGuard message of type typ, tagged.
func pbPacket(typ uint32, tag byte) []byte {
	p := bytes.Repeat([]byte{tag}, 148)
	binary.LittleEndian.PutUint32(p, typ)
	return p
}

// openPeerBind opens a peerBind on 127.0.0.1:0 with our key self; it is
// closed at cleanup. The last ReceiveFunc is the redelivery one.
func openPeerBind(t *testing.T, self [32]byte) (*peerBind, []conn.ReceiveFunc) {
	t.Helper()
	p := newTestPeerBind(self)
	fns, port, err := p.Open(0)
	if err != nil || len(fns) != 3 || port == 0 {
		t.Fatalf("Open: %d fns, port %d, err %v", len(fns), port, err)
	}
	t.Cleanup(func() { p.Close() })
	return p, fns
}

// newTestPeerBind is a closed peerBind on 127.0.0.1:0 with our key self.
func newTestPeerBind(self [32]byte) *peerBind {
	return newPeerBind(peerBindConfig{Socket: NewBind(BindConfig{ListenAddr: loopback4}), Self: self, Logger: slog.New(slog.DiscardHandler)})
}

type pbRecv struct {
	n     int
	sizes []int
	pkts  [][]byte
	eps   []conn.Endpoint
	err   error
}

// pbRecvAsync calls fn once in a goroutine; the result arrives on the channel.
func pbRecvAsync(fn conn.ReceiveFunc) <-chan pbRecv {
	ch := make(chan pbRecv, 1)
	go func() {
		r := pbRecv{sizes: make([]int, 8), pkts: make([][]byte, 8), eps: make([]conn.Endpoint, 8)}
		for i := range r.pkts {
			r.pkts[i] = make([]byte, 2048)
		}
		r.n, r.err = fn(r.pkts, r.sizes, r.eps)
		ch <- r
	}()
	return ch
}

func pbWait(t *testing.T, ch <-chan pbRecv) pbRecv {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(2 * time.Second):
		t.Fatal("receive timed out")
		return pbRecv{}
	}
}

// pbRecvOne receives one call's worth and requires at least one packet.
func pbRecvOne(t *testing.T, fn conn.ReceiveFunc) pbRecv {
	t.Helper()
	r := pbWait(t, pbRecvAsync(fn))
	if r.err != nil || r.n < 1 {
		t.Fatalf("receive: n=%d err=%v", r.n, r.err)
	}
	return r
}

// pbExpectOnly sends a sentinel from p's socket to remote and requires it to
// be the next packet remote receives: whatever was meant not to be sent
// would have arrived first (loopback UDP keeps order).
func pbExpectOnly(t *testing.T, p *peerBind, remote *Bind, recv conn.ReceiveFunc) {
	t.Helper()
	sentinel := pbPacket(pbMsgData, 0xee)
	if err := p.socket().Send([][]byte{sentinel}, newUDPEndpoint(remote.LocalAddr())); err != nil {
		t.Fatalf("send sentinel: %v", err)
	}
	r := pbRecvOne(t, recv)
	if got := r.pkts[0][:r.sizes[0]]; !bytes.Equal(got, sentinel) {
		t.Fatalf("remote got %x... (%d bytes) before the sentinel", got[:min(8, len(got))], len(got))
	}
}

func pbPeerEndpoint(t *testing.T, p *peerBind, k [32]byte) *peerEndpoint {
	t.Helper()
	ep, err := p.ParseEndpoint(peerEndpointString(k))
	if err != nil {
		t.Fatalf("ParseEndpoint: %v", err)
	}
	return ep.(*peerEndpoint)
}

func TestPeerBindParseEndpointAndSend(t *testing.T) {
	p, _ := openPeerBind(t, pbHigh)
	remote, recv := openTestBind(t)
	e := pbPeerEndpoint(t, p, pbLow)
	if !e.wins || e.DstToString() != "" || e.DstIP().IsValid() {
		t.Fatalf("new endpoint: wins=%v dst=%q ip=%v", e.wins, e.DstToString(), e.DstIP())
	}
	if again := pbPeerEndpoint(t, p, pbLow); again != e {
		t.Fatal("ParseEndpoint returned a second endpoint for one key")
	}
	ap := remote.LocalAddr()
	p.setPeers(map[[32]byte]netip.AddrPort{pbLow: ap})
	if p.byKey[pbLow] != e || e.DstToString() != ap.String() || e.DstIP() != ap.Addr() {
		t.Fatalf("after setPeers: same=%v dst=%q", p.byKey[pbLow] == e, e.DstToString())
	}
	pkt := pbPacket(pbMsgData, 7)
	if err := p.Send([][]byte{pkt}, e); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := pbRecvOne(t, recv)
	if !bytes.Equal(r.pkts[0][:r.sizes[0]], pkt) || r.eps[0].DstToString() != p.LocalAddr().String() {
		t.Fatalf("remote got %d bytes from %s", r.sizes[0], r.eps[0].DstToString())
	}
	for _, bad := range []string{"peer:zz", "peer:" + fmt.Sprintf("%062x", 1), "peer:"} {
		if ep, err := p.ParseEndpoint(bad); err == nil {
			t.Errorf("ParseEndpoint(%q) = %v, want error", bad, ep)
		}
	}
	if ep, err := p.ParseEndpoint("127.0.0.1:1"); err != nil {
		t.Errorf("ParseEndpoint(127.0.0.1:1): %v", err)
	} else if u, ok := ep.(*UDPEndpoint); !ok || u.AddrPort() != netip.MustParseAddrPort("127.0.0.1:1") {
		t.Errorf("ParseEndpoint(127.0.0.1:1) = %T %v", ep, ep)
	}
}

func TestPeerBindParking(t *testing.T) {
	for _, tc := range []struct {
		name     string
		typ      uint32
		age      time.Duration // parkedAt moved back by this much
		wantSent bool
	}{
		{"initiation", wgMsgInitiation, 0, true},
		{"data is dropped", pbMsgData, 0, false},
		{"stale initiation", wgMsgInitiation, wgRekeyTimeout + time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := openPeerBind(t, pbHigh)
			remote, recv := openTestBind(t)
			e := pbPeerEndpoint(t, p, pbLow)
			pkt := pbPacket(tc.typ, 9)
			if err := p.Send([][]byte{pkt}, e); err != nil {
				t.Fatalf("Send without path: %v", err)
			}
			p.guard.mu.Lock()
			gp := p.guard.peers[e.key]
			parked := gp != nil && gp.parked != nil
			if parked {
				gp.parkedAt = gp.parkedAt.Add(-tc.age)
			}
			p.guard.mu.Unlock()
			if parked != (tc.typ == wgMsgInitiation) || p.noPath.Load() != 1 {
				t.Fatalf("parked=%v noPath=%d", parked, p.noPath.Load())
			}
			pbExpectOnly(t, p, remote, recv)
			p.setPeers(map[[32]byte]netip.AddrPort{pbLow: remote.LocalAddr()})
			p.flush()
			if tc.wantSent {
				r := pbRecvOne(t, recv)
				if !bytes.Equal(r.pkts[0][:r.sizes[0]], pkt) {
					t.Fatalf("remote got %d bytes, want the parked initiation", r.sizes[0])
				}
			}
			p.flush() // nothing parked any more
			pbExpectOnly(t, p, remote, recv)
			p.guard.mu.Lock()
			defer p.guard.mu.Unlock()
			if want := map[bool]uint64{true: 1}[tc.wantSent]; p.parkedSent.Load() != want || gp != nil && gp.parked != nil {
				t.Fatalf("parkedSent=%d want %d, parked=%v", p.parkedSent.Load(), want, gp != nil && gp.parked != nil)
			}
		})
	}
}

func TestPeerBindTieBreak(t *testing.T) {
	for _, tc := range []struct {
		name     string
		self     [32]byte
		sendOurs bool
		typ      uint32
		dropped  bool
	}{
		{"winner drops initiation", pbHigh, true, wgMsgInitiation, true},
		{"winner without own initiation", pbHigh, false, wgMsgInitiation, false},
		{"loser keeps initiation", pbLow, true, wgMsgInitiation, false},
		{"winner keeps response", pbHigh, true, pbMsgResponse, false},
		{"winner keeps data", pbHigh, true, pbMsgData, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, fns := openPeerBind(t, tc.self)
			remote, recv := openTestBind(t)
			peer := pbLow
			if tc.self == pbLow {
				peer = pbHigh
			}
			e := pbPeerEndpoint(t, p, peer)
			p.setPeers(map[[32]byte]netip.AddrPort{peer: remote.LocalAddr()})
			if tc.sendOurs {
				if err := p.Send([][]byte{pbPacket(wgMsgInitiation, 1)}, e); err != nil {
					t.Fatalf("Send: %v", err)
				}
				pbRecvOne(t, recv)
			}
			if err := remote.Send([][]byte{pbPacket(tc.typ, 2)}, newUDPEndpoint(p.LocalAddr())); err != nil {
				t.Fatalf("remote Send: %v", err)
			}
			r := pbRecvOne(t, fns[0])
			if r.eps[0] != conn.Endpoint(e) {
				t.Fatalf("eps[0] = %T %v, want the peer endpoint", r.eps[0], r.eps[0])
			}
			if (r.sizes[0] == 0) != tc.dropped || (r.sizes[0] != 0 && r.sizes[0] != 148) {
				t.Fatalf("size %d, dropped want %v", r.sizes[0], tc.dropped)
			}
			if want := map[bool]uint64{true: 1}[tc.dropped]; p.tieDropped.Load() != want {
				t.Fatalf("tieDropped = %d, want %d", p.tieDropped.Load(), want)
			}
		})
	}
}

func TestPeerBindStrangerRedelivery(t *testing.T) {
	p, fns := openPeerBind(t, pbLow) // loses: the redelivery is not dropped
	remote, _ := openTestBind(t)
	e := pbPeerEndpoint(t, p, pbHigh)
	init := pbPacket(wgMsgInitiation, 3)
	if err := remote.Send([][]byte{init}, newUDPEndpoint(p.LocalAddr())); err != nil {
		t.Fatalf("remote Send: %v", err)
	}
	r := pbRecvOne(t, fns[0])
	if u, ok := r.eps[0].(*UDPEndpoint); !ok || u.AddrPort() != remote.LocalAddr() || r.sizes[0] != 148 {
		t.Fatalf("stranger's initiation: size %d from %T %v", r.sizes[0], r.eps[0], r.eps[0])
	}
	p.setPeers(map[[32]byte]netip.AddrPort{pbHigh: remote.LocalAddr()})
	p.flush()
	r = pbRecvOne(t, fns[len(fns)-1])
	if r.n != 1 || r.eps[0] != conn.Endpoint(e) || !bytes.Equal(r.pkts[0][:r.sizes[0]], init) {
		t.Fatalf("redelivered n=%d size=%d ep=%v", r.n, r.sizes[0], r.eps[0])
	}
	p.flush() // delivered once only
	p.guard.mu.Lock()
	defer p.guard.mu.Unlock()
	if len(p.inject) != 0 || p.redelivered.Load() != 1 || len(p.guard.strangers) != 0 {
		t.Fatalf("inject=%d redelivered=%d strangers=%d", len(p.inject), p.redelivered.Load(), len(p.guard.strangers))
	}
}

func TestPeerBindStrangerCollision(t *testing.T) {
	// Both sides initiate before knowing each other: our initiation is
	// parked, theirs arrives as a stranger's. flush sends ours and, as we
	// win, the redelivery of theirs is dropped. In a synctest bubble over
	// a memNet, so Wait shows when the redelivery has been consumed.
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		sock, remote := mn.socket(), mn.socket()
		p := newPeerBind(peerBindConfig{Socket: sock, Self: pbHigh, Logger: slog.New(slog.DiscardHandler)})
		fns, _, err := p.Open(0)
		if err != nil {
			t.Fatal(err)
		}
		rfns, _, _ := remote.Open(0)
		defer remote.Close()
		e := pbPeerEndpoint(t, p, pbLow)
		if err := p.Send([][]byte{pbPacket(wgMsgInitiation, 1)}, e); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if err := remote.Send([][]byte{pbPacket(wgMsgInitiation, 2)}, newUDPEndpoint(sock.addr)); err != nil {
			t.Fatalf("remote Send: %v", err)
		}
		if r := pbRecvOne(t, fns[0]); r.sizes[0] != 148 {
			t.Fatalf("stranger's initiation: size %d", r.sizes[0])
		}
		redeliver := pbRecvAsync(fns[len(fns)-1])
		p.setPeers(map[[32]byte]netip.AddrPort{pbLow: remote.addr})
		p.flush()
		pbRecvOne(t, rfns[0]) // our parked initiation
		synctest.Wait()
		if p.tieDropped.Load() != 1 {
			t.Fatalf("redelivered initiation not dropped by the tie-break (tieDropped %d)", p.tieDropped.Load())
		}
		p.Close()
		if r := pbWait(t, redeliver); r.n != 0 || !errors.Is(r.err, net.ErrClosed) || p.redelivered.Load() != 0 {
			t.Fatalf("redelivery: n=%d err=%v redelivered=%d", r.n, r.err, p.redelivered.Load())
		}
	})
}

// TestPeerBindCloseReopen: Close ends every receive function, blocked or
// called later, with net.ErrClosed, and the bind opens again. In a synctest
// bubble over a memNet: Wait shows when the receivers block, and the
// bubble fails the test if any goroutine is left behind.
func TestPeerBindCloseReopen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		sock, remote := mn.socket(), mn.socket()
		p := newPeerBind(peerBindConfig{Socket: sock, Self: pbLow, Logger: slog.New(slog.DiscardHandler)})
		for round := range 2 {
			fns, _, err := p.Open(0)
			if err != nil || len(fns) != 3 {
				t.Fatalf("round %d: Open: %d fns, %v", round, len(fns), err)
			}
			e := pbPeerEndpoint(t, p, pbHigh)
			p.setPeers(map[[32]byte]netip.AddrPort{pbHigh: remote.addr})
			if err := remote.Send([][]byte{pbPacket(pbMsgData, 5)}, newUDPEndpoint(sock.addr)); err != nil {
				t.Fatalf("round %d: remote Send: %v", round, err)
			}
			if r := pbRecvOne(t, fns[0]); r.eps[0] != conn.Endpoint(e) || r.sizes[0] != 148 {
				t.Fatalf("round %d: got size %d from %v", round, r.sizes[0], r.eps[0])
			}
			recvs := []<-chan pbRecv{pbRecvAsync(fns[0]), pbRecvAsync(fns[1]), pbRecvAsync(fns[2])}
			synctest.Wait() // all three block
			if err := p.Close(); err != nil {
				t.Fatalf("round %d: Close: %v", round, err)
			}
			recvs = append(recvs, pbRecvAsync(fns[1])) // called after Close
			for i, ch := range recvs {
				if r := pbWait(t, ch); !errors.Is(r.err, net.ErrClosed) {
					t.Fatalf("round %d: receive %d after Close: n=%d err=%v", round, i, r.n, r.err)
				}
			}
		}
	})
}

// TestPeerBindDataTakesNoLock: data packets from and to a known peer path
// pass while the path table's and the guard's locks are held (the receive
// fast path is an atomic load and a lookup; the send path an atomic load).
func TestPeerBindDataTakesNoLock(t *testing.T) {
	mn := newMemNet()
	sock, remote := mn.socket(), mn.socket()
	p := newPeerBind(peerBindConfig{Socket: sock, Self: pbHigh, Logger: slog.New(slog.DiscardHandler)})
	fns, _, err := p.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rfns, _, _ := remote.Open(0)
	defer remote.Close()
	e := pbPeerEndpoint(t, p, pbLow)
	p.setPeers(map[[32]byte]netip.AddrPort{pbLow: remote.addr})

	p.pathTable.mu.Lock()
	p.guard.mu.Lock()
	defer p.pathTable.mu.Unlock()
	defer p.guard.mu.Unlock()
	remote.Send([][]byte{pbPacket(wgMsgData, 1)}, newUDPEndpoint(sock.addr))
	if r := pbRecvOne(t, fns[0]); r.eps[0] != conn.Endpoint(e) || r.sizes[0] != 148 {
		t.Fatalf("data received as %v, size %d", r.eps[0], r.sizes[0])
	}
	if err := p.Send([][]byte{pbPacket(wgMsgData, 2)}, e); err != nil {
		t.Fatal(err)
	}
	if r := pbRecvOne(t, rfns[0]); r.sizes[0] != 148 {
		t.Fatalf("data sent: size %d", r.sizes[0])
	}
}

// BenchmarkPeerBindReceiveData is the receive fast path alone: a batch of
// data packets from a known peer path, as the socket's receive function
// returns it, through peerBind's wrapper.
func BenchmarkPeerBindReceiveData(b *testing.B) {
	mn := newMemNet()
	p := newPeerBind(peerBindConfig{Socket: mn.socket(), Self: pbHigh, Logger: slog.New(slog.DiscardHandler)})
	src := netip.MustParseAddrPort("192.0.2.1:41641")
	p.setPeers(map[[32]byte]netip.AddrPort{pbLow: src})
	const batch = 64
	pkt := pbPacket(wgMsgData, 1)
	raw := newUDPEndpoint(src)
	recv := p.receive(func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for i := range batch {
			sizes[i] = copy(packets[i], pkt)
			eps[i] = raw
		}
		return batch, nil
	})
	packets, sizes, eps := make([][]byte, batch), make([]int, batch), make([]conn.Endpoint, batch)
	for i := range packets {
		packets[i] = make([]byte, 1500)
	}
	b.ReportAllocs()
	for b.Loop() {
		if n, _ := recv(packets, sizes, eps); n != batch || eps[0] == conn.Endpoint(raw) {
			b.Fatal("not attributed")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/packet")
}
