package overlay

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Catalogue rows of issue 17: replayed and far-behind transport packets,
// and a replayed handshake initiation, between two real wireguard-go
// devices on Binds at 127.0.0.1. bravo reaches alpha through a tap, a UDP
// socket that forwards both ways, records what bravo sends and can hold a
// packet back or send one again (the attacker on the path).
//
// wireguard-go keeps no drop counters: a dropped replay shows as a
// datagram alpha's Bind received (RxPackets) that added nothing to the
// peer's rx_bytes (what agentnet_node_peer_receive_bytes_total exports)
// and delivered nothing to the TUN.

type tap struct {
	pc      *net.UDPConn
	a, b    netip.AddrPort // alpha's and bravo's sockets
	mu      sync.Mutex
	fromB   [][]byte    // every datagram bravo sent, in order
	holdOne atomic.Bool // hold back the next data packet from bravo (never forwarded)
	held    []byte
	resps   atomic.Int64 // handshake responses alpha sent
}

func newTap(t *testing.T, a, b netip.AddrPort) *tap {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{pc: pc, a: a, b: b}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pkt := append([]byte(nil), buf[:n]...)
			if from == b {
				tp.mu.Lock()
				tp.fromB = append(tp.fromB, pkt)
				if msgType(pkt) == wgMsgData && len(pkt) > wgDataMinSize && tp.holdOne.CompareAndSwap(true, false) {
					tp.held = pkt
					tp.mu.Unlock()
					continue
				}
				tp.mu.Unlock()
				pc.WriteToUDPAddrPort(pkt, a)
				continue
			}
			if msgType(pkt) == wgMsgResponse {
				tp.resps.Add(1)
			}
			pc.WriteToUDPAddrPort(pkt, b)
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return tp
}

func (tp *tap) addr() netip.AddrPort { return tp.pc.LocalAddr().(*net.UDPAddr).AddrPort() }

// last returns the last datagram from bravo of type typ (data: with a
// payload, not a keepalive).
func (tp *tap) last(typ uint32) []byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for i := len(tp.fromB) - 1; i >= 0; i-- {
		if p := tp.fromB[i]; msgType(p) == typ && (typ != wgMsgData || len(p) > wgDataMinSize) {
			return p
		}
	}
	return nil
}

func (tp *tap) inject(pkt []byte) { tp.pc.WriteToUDPAddrPort(pkt, tp.a) }

// replayPair is alpha and bravo, bravo reaching alpha through a tap, with
// alpha's deliveries counted by payload.
type replayPair struct {
	a, b *wgNode
	tap  *tap
	mu   sync.Mutex
	got  map[string]int
}

func newReplayPair(t *testing.T) *replayPair {
	a := newWGNode(t, iA4, iA6, nil, true)
	b := newWGNode(t, iB4, iB6, nil, true)
	p := &replayPair{a: a, b: b, got: map[string]int{}}
	p.tap = newTap(t, a.bind.LocalAddr(), b.bind.LocalAddr())
	// alpha knows bravo without an endpoint: it answers wherever bravo's
	// packets come from (the tap).
	if err := a.dev.IpcSet(fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\n", hex.EncodeToString(b.key.PublicKey().Bytes()), iB4)); err != nil {
		t.Fatal(err)
	}
	if err := b.dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n", hex.EncodeToString(a.key.PublicKey().Bytes()), p.tap.addr(), iA4)); err != nil {
		t.Fatal(err)
	}
	go func() {
		for pkt := range a.ch.Inbound {
			if len(pkt) < 28 {
				continue
			}
			p.mu.Lock()
			p.got[string(pkt[28:])]++
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *replayPair) send(payload string) {
	p.b.ch.Outbound <- testPkt{src: iB4, dst: iA4, proto: protoUDP, sport: 1000, dport: 2000, payload: []byte(payload)}.build()
}

func (p *replayPair) count(payload string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[payload]
}

func (p *replayPair) waitFor(t *testing.T, payload string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.count(payload) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%q never delivered", payload)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rxBytes is alpha's wireguard-go rx_bytes for bravo.
func (p *replayPair) rxBytes(t *testing.T) uint64 {
	t.Helper()
	s, err := p.a.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "rx_bytes="); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// quiet waits for alpha's counters to settle and returns them.
func (p *replayPair) quiet(t *testing.T) (rx uint64, bindRx uint64) {
	t.Helper()
	prev := p.rxBytes(t)
	for {
		time.Sleep(100 * time.Millisecond)
		cur := p.rxBytes(t)
		if cur == prev {
			return cur, p.a.bind.Stats().RxPackets
		}
		prev = cur
	}
}

func (p *replayPair) expectDropped(t *testing.T, what string, pkt []byte, payload string, before int) {
	t.Helper()
	rx0, brx0 := p.quiet(t)
	p.tap.inject(pkt)
	deadline := time.Now().Add(5 * time.Second)
	for p.a.bind.Stats().RxPackets == brx0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: alpha's socket never received the injected packet", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a delivery would be on the TUN by now
	if c := p.count(payload); c != before {
		t.Fatalf("%s: %q delivered %d times, want %d", what, payload, c, before)
	}
	if rx := p.rxBytes(t); rx != rx0 {
		t.Fatalf("%s: rx_bytes %d → %d: wireguard-go accepted it", what, rx0, rx)
	}
}

func TestReplayedTransportDropped(t *testing.T) {
	p := newReplayPair(t)
	p.send("first")
	p.waitFor(t, "first")
	captured := p.tap.last(wgMsgData)
	if captured == nil {
		t.Fatal("no data packet captured")
	}
	p.expectDropped(t, "replay", captured, "first", 1)
}

func TestFarBehindTransportDropped(t *testing.T) {
	p := newReplayPair(t)
	p.send("warmup")
	p.waitFor(t, "warmup")
	p.tap.holdOne.Store(true)
	p.send("held")
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.tap.mu.Lock()
		held := p.tap.held
		p.tap.mu.Unlock()
		if held != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tap held nothing back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Move bravo's counter far past the replay window (8,192 minus a
	// word, RFC 6479 as wireguard-go implements it).
	const n = 9000
	for i := range n {
		p.send("fill " + strconv.Itoa(i)) // wireguard-go has taken it: its counter moved
		if i%256 == 255 {
			time.Sleep(2 * time.Millisecond) // let loopback keep up; losses do not matter
		}
	}
	p.tap.mu.Lock()
	held := p.tap.held
	p.tap.mu.Unlock()
	p.expectDropped(t, "far behind", held, "held", 0)
}

func TestReplayedInitiationUnanswered(t *testing.T) {
	p := newReplayPair(t)
	p.send("hello")
	p.waitFor(t, "hello")
	init := p.tap.last(wgMsgInitiation)
	if init == nil {
		t.Fatal("no initiation captured")
	}
	p.quiet(t)
	resps := p.tap.resps.Load()
	if resps == 0 {
		t.Fatal("no handshake response seen")
	}
	brx := p.a.bind.Stats().RxPackets
	p.tap.inject(init)
	deadline := time.Now().Add(5 * time.Second)
	for p.a.bind.Stats().RxPackets == brx {
		if time.Now().After(deadline) {
			t.Fatal("alpha's socket never received the replayed initiation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if r := p.tap.resps.Load(); r != resps {
		t.Fatalf("alpha answered a replayed initiation (%d responses, was %d)", r, resps)
	}
	// The session still works.
	p.send("after")
	p.waitFor(t, "after")
	if !bytes.Equal(init, p.tap.last(wgMsgInitiation)) {
		t.Log("bravo initiated again meanwhile")
	}
}
