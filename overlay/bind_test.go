package overlay

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

var loopback4 = netip.MustParseAddrPort("127.0.0.1:0")

// openTestBind opens a Bind on 127.0.0.1:0 and closes it at cleanup.
func openTestBind(tb testing.TB) (*Bind, conn.ReceiveFunc) {
	tb.Helper()
	b := NewBind(BindConfig{ListenAddr: loopback4})
	fns, port, err := b.Open(0)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	if len(fns) != 1 || port == 0 || b.LocalAddr().Port() != port {
		tb.Fatalf("Open: %d fns, port %d, LocalAddr %v", len(fns), port, b.LocalAddr())
	}
	tb.Cleanup(func() { b.Close() })
	return b, fns[0]
}

func endpointOf(tb testing.TB, b *Bind) conn.Endpoint {
	tb.Helper()
	ep, err := b.ParseEndpoint(b.LocalAddr().String())
	if err != nil {
		tb.Fatalf("ParseEndpoint(%v): %v", b.LocalAddr(), err)
	}
	return ep
}

// testPacket returns packet i of a batch: its index, then a pattern.
func testPacket(i, size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint32(p, uint32(i))
	for j := 4; j < size; j++ {
		p[j] = byte(i + j)
	}
	return p
}

// recvBatch receives exactly want packets (in as many calls as it takes)
// and returns copies of them in arrival order with their endpoints.
// It closes b after 10 s so a lost packet fails the test instead of
// hanging it.
func recvBatch(tb testing.TB, b *Bind, recv conn.ReceiveFunc, want, bufSize int) ([][]byte, []conn.Endpoint) {
	tb.Helper()
	timer := time.AfterFunc(10*time.Second, func() { b.Close() })
	defer timer.Stop()
	bufs := make([][]byte, bindBatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	sizes := make([]int, bindBatchSize)
	eps := make([]conn.Endpoint, bindBatchSize)
	var got [][]byte
	var from []conn.Endpoint
	for len(got) < want {
		n, err := recv(bufs, sizes, eps)
		if err != nil {
			tb.Fatalf("receive after %d packets: %v", len(got), err)
		}
		for i := range n {
			if sizes[i] == 0 {
				continue
			}
			got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
			from = append(from, eps[i])
		}
	}
	return got, from
}

func TestBindExchangeBatches(t *testing.T) {
	const count = 64
	tests := []struct {
		name    string
		size    func(i int) int
		bufSize int // receive buffer; below 64 KiB turns GRO off
	}{
		{"equal 1400", func(int) int { return 1400 }, 1 << 16},
		{"mixed sizes", func(i int) int { return 100 + (i%5)*300 }, 1 << 16},
		{"short tail", func(i int) int { return map[bool]int{true: 200, false: 1200}[i == count-1] }, 1 << 16},
		{"small receive buffers", func(int) int { return 1400 }, 1500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, recvA := openTestBind(t)
			b, recvB := openTestBind(t)
			for _, dir := range []struct {
				name     string
				src, dst *Bind
				recv     conn.ReceiveFunc
			}{{"a→b", a, b, recvB}, {"b→a", b, a, recvA}} {
				var want [][]byte
				for i := range count {
					want = append(want, testPacket(i, tt.size(i)))
				}
				if err := dir.src.Send(want, endpointOf(t, dir.dst)); err != nil {
					t.Fatalf("%s: Send: %v", dir.name, err)
				}
				got, from := recvBatch(t, dir.dst, dir.recv, count, tt.bufSize)
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("%s: packet %d: got %d bytes (index %d), want %d bytes", dir.name, i,
							len(got[i]), binary.BigEndian.Uint32(got[i]), len(want[i]))
					}
					if from[i].DstToString() != dir.src.LocalAddr().String() {
						t.Fatalf("%s: packet %d from %s, want %s", dir.name, i, from[i].DstToString(), dir.src.LocalAddr())
					}
				}
			}
			st := a.Stats()
			if st.TxPackets != count || st.RxPackets != count || st.RxDrops != 0 || st.TxErrors != 0 {
				t.Errorf("Stats = %+v", st)
			}
		})
	}
}

func TestBindCloseUnblocksReceive(t *testing.T) {
	b, recv := openTestBind(t)
	self := endpointOf(t, b)
	errc := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 1<<16)}
		_, err := recv(bufs, make([]int, 1), make([]conn.Endpoint, 1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it block in recvmmsg
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("receive after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("receive still blocked after Close")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := b.LocalAddr(); got.IsValid() {
		t.Fatalf("LocalAddr after Close = %v", got)
	}
	if err := b.Send([][]byte{{1}}, self); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v, want net.ErrClosed", err)
	}
}

func TestBindReopen(t *testing.T) {
	b, _ := openTestBind(t)
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open: %v, want ErrBindAlreadyOpen", err)
	}
	port := b.LocalAddr().Port()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// wireguard-go reopens on the port it got the first time.
	fns, got, err := b.Open(port)
	if err != nil {
		t.Fatalf("re-Open(%d): %v", port, err)
	}
	if got != port {
		t.Fatalf("re-Open port = %d, want %d", got, port)
	}
	peer, _ := openTestBind(t)
	if err := peer.Send([][]byte{[]byte("again")}, endpointOf(t, b)); err != nil {
		t.Fatal(err)
	}
	pkts, _ := recvBatch(t, b, fns[0], 1, 1<<16)
	if string(pkts[0]) != "again" {
		t.Fatalf("got %q", pkts[0])
	}
}

func TestBindIPv4OnlyRefusesIPv6(t *testing.T) {
	b, _ := openTestBind(t)
	ep, err := b.ParseEndpoint("[::1]:9")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Send([][]byte{{1}}, ep); err == nil {
		t.Fatal("Send to IPv6 from an IPv4 bind succeeded")
	}
}

func TestBindParseEndpoint(t *testing.T) {
	b := NewBind(BindConfig{ListenAddr: loopback4})
	tests := []struct {
		in      string
		want    string // DstToString; "" means an error is expected
		wantErr bool
	}{
		{in: "127.0.0.1:51820", want: "127.0.0.1:51820"},
		{in: "[::1]:7", want: "[::1]:7"},
		{in: "[::ffff:10.1.2.3]:9", want: "10.1.2.3:9"},
		{in: "", wantErr: true},
		{in: "garbage", wantErr: true},
		{in: "127.0.0.1", wantErr: true},
		{in: "127.0.0.1:", wantErr: true},
		{in: "127.0.0.1:65536", wantErr: true},
		{in: "127.0.0.1:0", wantErr: true},
		{in: "0.0.0.0:53", wantErr: true},
		{in: "::1:53", wantErr: true},
		{in: "host.example:53", wantErr: true},
		{in: "\x00\xff:1", wantErr: true},
	}
	for _, tt := range tests {
		ep, err := b.ParseEndpoint(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseEndpoint(%q) = %v, want error", tt.in, ep.DstToString())
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseEndpoint(%q): %v", tt.in, err)
			continue
		}
		if got := ep.DstToString(); got != tt.want {
			t.Errorf("ParseEndpoint(%q).DstToString() = %q, want %q", tt.in, got, tt.want)
		}
		if len(ep.DstToBytes()) == 0 || ep.DstIP().String()+"" == "" {
			t.Errorf("ParseEndpoint(%q): empty DstToBytes/DstIP", tt.in)
		}
	}
}

// TestBindWireGuardEndToEnd runs two real wireguard-go devices over our
// Binds on loopback and passes an IPv4 ping through the tunnel.
func TestBindWireGuardEndToEnd(t *testing.T) {
	type side struct {
		tun  *tuntest.ChannelTUN
		bind *Bind
		dev  *device.Device
		priv *ecdh.PrivateKey
		ip   netip.Addr
	}
	newSide := func(ip string) *side {
		priv, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s := &side{tun: tuntest.NewChannelTUN(), bind: NewBind(BindConfig{ListenAddr: loopback4}), priv: priv, ip: netip.MustParseAddr(ip)}
		s.dev = device.NewDevice(s.tun.TUN(), s.bind, device.NewLogger(device.LogLevelError, "wg "+ip+": "))
		t.Cleanup(s.dev.Close)
		if err := s.dev.IpcSet("private_key=" + hex.EncodeToString(priv.Bytes()) + "\n"); err != nil {
			t.Fatal(err)
		}
		if err := s.dev.Up(); err != nil { // opens the Bind
			t.Fatal(err)
		}
		if !s.bind.LocalAddr().IsValid() {
			t.Fatal("device Up did not open the bind")
		}
		return s
	}
	a, b := newSide("10.99.0.1"), newSide("10.99.0.2")
	peer := func(self, other *side) {
		cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
			hex.EncodeToString(other.priv.PublicKey().Bytes()), other.bind.LocalAddr(), other.ip)
		if err := self.dev.IpcSet(cfg); err != nil {
			t.Fatal(err)
		}
	}
	peer(a, b)
	peer(b, a)

	for _, dir := range []struct{ from, to *side }{{a, b}, {b, a}} {
		ping := tuntest.Ping(dir.to.ip, dir.from.ip)
		select {
		case dir.from.tun.Outbound <- ping:
		case <-time.After(5 * time.Second):
			t.Fatal("device did not read the ping")
		}
		select {
		case got := <-dir.to.tun.Inbound:
			if !bytes.Equal(got, ping) {
				t.Fatalf("%v→%v: got %x, want %x", dir.from.ip, dir.to.ip, got, ping)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v→%v: ping not delivered", dir.from.ip, dir.to.ip)
		}
	}
	if st := a.bind.Stats(); st.TxPackets == 0 || st.RxPackets == 0 {
		t.Errorf("bind stats after tunnel traffic: %+v", st)
	}
}

func BenchmarkBindSendRecv(b *testing.B) {
	const batch, size = 64, 1400
	src, _ := openTestBind(b)
	dst, recv := openTestBind(b)
	ep := endpointOf(b, dst)
	pkts := make([][]byte, batch)
	for i := range pkts {
		pkts[i] = testPacket(i, size)
	}
	bufs := make([][]byte, bindBatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	sizes := make([]int, bindBatchSize)
	eps := make([]conn.Endpoint, bindBatchSize)
	b.SetBytes(batch * size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := src.Send(pkts, ep); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < batch; {
			n, err := recv(bufs, sizes, eps)
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				if sizes[i] > 0 {
					got++
				}
			}
		}
	}
	b.StopTimer()
	if st := dst.Stats(); st.RxDrops != 0 {
		b.Fatalf("drops: %+v", st)
	}
}
