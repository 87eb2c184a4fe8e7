package turnclient

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"github.com/agentnet/agentnet/relay/internal/pionlog"
	"github.com/agentnet/agentnet/relay/internal/udpbatch"
	"github.com/agentnet/agentnet/wire"
)

// TestAllocationBurst: a peer's burst reaches the allocation whole and in
// order, first as Data indications (no channel yet), then as ChannelData
// once the client sent to the peer (binding a channel).
func TestAllocationBurst(t *testing.T) {
	fx := startTURNFixture(t)
	a := testAlloc(t, fx.relay, wire.TransportUDP)
	peer := loopbackUDP(t)
	udpbatch.Tune(peer)
	peerAP := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := a.Permit(peerAP.Addr()); err != nil {
		t.Fatal(err)
	}
	burst := func(round int) {
		t.Helper()
		var want [][]byte
		for i := range 200 {
			p := bytes.Repeat([]byte{byte(i)}, []int{1420, 1420, 1420, 100, 1420, 33}[i%6])
			binary.BigEndian.PutUint16(p, uint16(round<<8|i))
			want = append(want, p)
			if _, err := peer.WriteToUDPAddrPort(p, a.RelayedAddr()); err != nil {
				t.Fatal(err)
			}
		}
		buf := make([]byte, 2048)
		for i, w := range want {
			got := make(chan error, 1)
			go func() {
				n, from, err := a.ReadFrom(buf)
				if err == nil && (!bytes.Equal(buf[:n], w) || from != peerAP) {
					err = fmt.Errorf("packet %d: %d bytes from %v, want %d from %v", i, n, from, len(w), peerAP)
				}
				got <- err
			}()
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("round %d: %v (dropped %d, relay %+v)", round, err, a.Dropped(), fx.srv.Stats())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: packet %d never arrived (dropped %d)", round, i, a.Dropped())
			}
		}
	}
	burst(0)
	// Sending to the peer binds a channel (pion binds on first send).
	for range 3 {
		if err := a.WriteTo([]byte("bind"), peerAP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	burst(1)
	if d := a.Dropped(); d != 0 {
		t.Errorf("Dropped = %d, want 0", d)
	}
}

// TestAllocationIgnoresForeign: relayed-looking datagrams that do not come
// from the relay are never handed out.
func TestAllocationIgnoresForeign(t *testing.T) {
	fx := startTURNFixture(t)
	a := testAlloc(t, fx.relay, wire.TransportUDP)
	evil := loopbackUDP(t)
	to := a.base.LocalAddr().(*net.UDPAddr)
	to.IP = net.IPv4(127, 0, 0, 1)
	chData := []byte{0x40, 0x00, 0x00, 0x04, 'e', 'v', 'i', 'l'}
	ind, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodData, stun.ClassIndication),
		&stun.XORMappedAddress{IP: net.IPv4(127, 0, 0, 1), Port: 9}, rawAttr{stun.AttrData, []byte("evil")})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{chData, ind.Raw} {
		if _, err := evil.WriteTo(p, to); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.rxForeign.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.rxForeign.Load(); n != 2 {
		t.Fatalf("foreign datagrams counted: %d, want 2", n)
	}
	select {
	case b := <-a.rx:
		t.Fatalf("a foreign datagram was queued: %+v", b.pkts)
	default:
	}
}

// rawAttr adds one attribute as is.
type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (r rawAttr) AddTo(m *stun.Message) error { m.Add(r.t, r.v); return nil }

// fakeChannels maps channel 0x4000 to one peer.
type fakeChannels struct{}

func (fakeChannels) FindAddrByChannelNumber(n uint16) (net.Addr, bool) {
	if n != 0x4000 {
		return nil, false
	}
	return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 51820}, true
}

// FuzzAllocationFrame feeds the client's frame decoder arbitrary frames
// from the relay: it must not panic, and what it hands out lies within
// the frame.
func FuzzAllocationFrame(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0x00, 0x02, 'h', 'i'})
	f.Add([]byte{0x40, 0x00, 0xff, 0xff})
	f.Add([]byte{0x7f, 0xff, 0x00, 0x00})
	if m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodData, stun.ClassIndication),
		&stun.XORMappedAddress{IP: net.IPv4(192, 0, 2, 1), Port: 9}, rawAttr{stun.AttrData, []byte("data")}); err == nil {
		f.Add(m.Raw)
	}
	if m, err := stun.Build(stun.TransactionID, stun.BindingSuccess); err == nil {
		f.Add(m.Raw)
	}
	uc := loopbackUDP(f)
	client, err := turn.NewClient(&turn.ClientConfig{Conn: uc, LoggerFactory: pionlog.Factory{Log: slog.New(slog.DiscardHandler), Client: true}})
	if err != nil {
		f.Fatal(err)
	}
	defer client.Close()
	a := &Allocation{client: client, log: slog.New(slog.DiscardHandler)}
	var fc channelFinder = fakeChannels{}
	a.chans.Store(&fc)
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478}
	f.Fuzz(func(t *testing.T, d []byte) {
		var b rxBatch
		var msg stun.Message
		a.frame(&b, d, from, &msg)
		for _, p := range b.pkts {
			if len(p.b) > len(d) || !p.from.IsValid() {
				t.Fatalf("handed out %d bytes from %v for a %d-byte frame", len(p.b), p.from, len(d))
			}
			if !bytes.Contains(d, p.b) {
				t.Fatalf("payload %x is not within the frame", p.b)
			}
		}
	})
}
