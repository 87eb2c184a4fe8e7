package turnclient

// A relay that alters, replays or reorders the frames it relays: the
// relay is not trusted with the payload, WireGuard is. Two real
// wireguard-go devices talk through allocations on a real relay; the
// frames the relay hands node B are tampered with on their way in (as a
// hostile relay would send them), and B's device must accept no altered
// and no replayed packet, and each reordered one exactly once.
// (Test-only import of wireguard-go: relay/deps_test.go checks the
// packages, not their tests.)

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/agentnet/agentnet/wire"
)

// allocBind is a wireguard-go conn.Bind whose only path is a TURN
// allocation: what a relayed node's bind does, and no more.
type allocBind struct{ a *Allocation }

type allocEndpoint netip.AddrPort

func (e allocEndpoint) ClearSrc()           {}
func (e allocEndpoint) SrcToString() string { return "" }
func (e allocEndpoint) DstToString() string { return netip.AddrPort(e).String() }
func (e allocEndpoint) DstToBytes() []byte  { b, _ := netip.AddrPort(e).MarshalBinary(); return b }
func (e allocEndpoint) DstIP() netip.Addr   { return netip.AddrPort(e).Addr() }
func (e allocEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

func (b *allocBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	return []conn.ReceiveFunc{func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, from, err := b.a.ReadFrom(packets[0])
		if err != nil {
			return 0, net.ErrClosed
		}
		sizes[0], eps[0] = n, allocEndpoint(from)
		return 1, nil
	}}, b.a.RelayedAddr().Port(), nil
}

func (b *allocBind) Close() error         { return nil } // the test closes the allocation
func (b *allocBind) SetMark(uint32) error { return nil }
func (b *allocBind) BatchSize() int       { return 1 }
func (b *allocBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	return allocEndpoint(ap), err
}

func (b *allocBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(allocEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	for _, p := range bufs {
		if err := b.a.WriteTo(p, netip.AddrPort(e)); err != nil {
			return err
		}
	}
	return nil
}

// tamperConn is node B's UDP socket towards the relay, on which the
// relay's frames carrying WireGuard transport data (type 4) are altered,
// replayed or reordered before the TURN client sees them.
type tamperConn struct {
	net.PacketConn
	mode string // "alter", "replay" or "reorder"

	mu      sync.Mutex // guards the fields below
	n       int        // transport frames seen
	pending [][]byte   // frames to return before reading again
	held    []byte     // reorder: the frame held back
	old     [][]byte   // replay: every transport frame seen
	from    net.Addr
}

// wgData returns the WireGuard packet inside a ChannelData message or a
// Data indication from the relay (a slice of frame), or nil.
func wgData(frame []byte) []byte {
	switch {
	case len(frame) >= 4 && frame[0]&0xC0 == 0x40:
		n := int(binary.BigEndian.Uint16(frame[2:]))
		if 4+n <= len(frame) {
			return frame[4 : 4+n]
		}
	case stun.IsMessage(frame):
		m := &stun.Message{Raw: frame}
		if m.Decode() == nil {
			if a, ok := m.Attributes.Get(stun.AttrData); ok {
				return a.Value // a slice of frame
			}
		}
	}
	return nil
}

func (c *tamperConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		if len(c.pending) > 0 {
			f := c.pending[0]
			c.pending = c.pending[1:]
			from := c.from
			c.mu.Unlock()
			return copy(p, f), from, nil
		}
		c.mu.Unlock()
		n, from, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, from, err
		}
		d := wgData(p[:n])
		if len(d) < 32 || d[0] != 4 { // not transport data (or a keepalive): as is
			return n, from, err
		}
		frame := append([]byte(nil), p[:n]...)
		c.mu.Lock()
		c.from = from
		c.n++
		switch c.mode {
		case "alter":
			if c.n%2 == 0 {
				d := wgData(frame)
				switch c.n % 6 {
				case 0:
					d[len(d)-1] ^= 0x80 // the Poly1305 tag
				case 2:
					d[16] ^= 0x01 // the ciphertext
				case 4:
					d[8]++ // the counter (the nonce)
				}
			}
			c.pending = append(c.pending, frame)
		case "replay":
			// Each frame twice, then an old one again.
			c.old = append(c.old, frame)
			c.pending = append(c.pending, frame, frame)
			if len(c.old) > 5 {
				c.pending = append(c.pending, c.old[len(c.old)-5])
			}
		case "reorder":
			if c.held == nil {
				c.held = frame
			} else {
				c.pending = append(c.pending, frame, c.held)
				c.held = nil
			}
		}
		c.mu.Unlock()
	}
}

// ipPacket is an IPv4 packet from src to dst (protocol 253, experimental)
// carrying seq and a pattern the receiver checks.
func ipPacket(src, dst netip.Addr, seq uint32) []byte {
	p := make([]byte, 20+64)
	p[0], p[8], p[9] = 0x45, 64, 253
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint32(p[20:], seq)
	for i := 24; i < len(p); i++ {
		p[i] = byte(seq) ^ byte(i)
	}
	return p
}

// checkPacket returns the seq of a packet made by ipPacket, or an error
// if it is not one, intact.
func checkPacket(p []byte) (uint32, error) {
	if len(p) != 20+64 {
		return 0, fmt.Errorf("%d bytes", len(p))
	}
	seq := binary.BigEndian.Uint32(p[20:])
	for i := 24; i < len(p); i++ {
		if p[i] != byte(seq)^byte(i) {
			return seq, fmt.Errorf("packet %d: byte %d altered", seq, i)
		}
	}
	return seq, nil
}

func wgKey(t *testing.T) (priv, pub string) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(k.Bytes()), hex.EncodeToString(k.PublicKey().Bytes())
}

func TestTamperingRelayFramesRejected(t *testing.T) {
	for _, mode := range []string{"alter", "replay", "reorder"} {
		t.Run(mode, func(t *testing.T) { tamperCase(t, mode) })
	}
}

func tamperCase(t *testing.T, mode string) {
	fx := startTURNFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	a, err := Allocate(ctx, Config{Relay: fx.relay, Transport: wire.TransportUDP, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var tc *tamperConn
	b, err := Allocate(ctx, Config{Relay: fx.relay, Transport: wire.TransportUDP, Logger: quiet,
		ListenPacket: func(ctx context.Context, network, addr string) (net.PacketConn, error) {
			var lc net.ListenConfig
			pc, err := lc.ListenPacket(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc = &tamperConn{PacketConn: pc, mode: mode}
			return tc, nil
		}})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	for _, x := range []*Allocation{a, b} {
		if err := x.Permit(netip.MustParseAddr("127.0.0.1")); err != nil {
			t.Fatal(err)
		}
	}
	ipA, ipB := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	privA, pubA := wgKey(t)
	privB, pubB := wgKey(t)
	tunA, tunB := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	logger := device.NewLogger(device.LogLevelSilent, "")
	devA := device.NewDevice(tunA.TUN(), &allocBind{a}, logger)
	devB := device.NewDevice(tunB.TUN(), &allocBind{b}, logger)
	defer func() {
		// Allocations first: their ReadFrom then returns and the devices'
		// receive loops end.
		a.Close()
		b.Close()
		devA.Close()
		devB.Close()
	}()
	if err := devA.IpcSet(fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
		privA, pubB, b.RelayedAddr(), ipB)); err != nil {
		t.Fatal(err)
	}
	if err := devB.IpcSet(fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
		privB, pubA, a.RelayedAddr(), ipA)); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(devA.Up(), devB.Up()); err != nil {
		t.Fatal(err)
	}

	got := map[uint32]int{}
	var bad []error
	recv := func(wait time.Duration) {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		for {
			select {
			case p := <-tunB.Inbound:
				seq, err := checkPacket(p)
				if err != nil {
					bad = append(bad, err)
				}
				got[seq]++
			case <-timer.C:
				return
			}
		}
	}
	// The first packet starts the handshake; wait until one gets through.
	for seq := uint32(1000); len(got) == 0; seq++ {
		if seq == 1020 {
			t.Fatal("no packet through the tunnel after 20 tries")
		}
		tunA.Outbound <- ipPacket(ipA, ipB, seq)
		recv(300 * time.Millisecond)
	}
	clear(got)
	const n = 60
	for seq := range uint32(n) {
		tunA.Outbound <- ipPacket(ipA, ipB, seq)
		recv(2 * time.Millisecond)
	}
	tunA.Outbound <- ipPacket(ipA, ipB, n) // the partner of a held frame when reordering
	recv(time.Second)
	delete(got, n)
	for _, err := range bad {
		t.Error("an altered packet was accepted: ", err)
	}
	dup := 0
	for seq, c := range got {
		if seq >= n && seq < 1000 {
			t.Errorf("packet %d was never sent", seq)
		}
		if c > 1 {
			dup++
		}
	}
	tc.mu.Lock()
	frames := tc.n
	tc.mu.Unlock()
	t.Logf("%s: %d transport frames tampered with; %d of %d packets delivered, %d more than once", mode, frames, len(got), n, dup)
	if dup > 0 {
		t.Errorf("%d packets were accepted more than once", dup)
	}
	switch mode {
	case "alter": // every other frame altered: about half get through, intact
		if len(got) < n/4 || len(got) > n/2+2 {
			t.Errorf("%d of %d delivered, want about half (the unaltered ones)", len(got), n)
		}
	default: // replays dropped, reordered ones each accepted once
		if len(got) < n-2 {
			t.Errorf("%d of %d delivered", len(got), n)
		}
	}
}
