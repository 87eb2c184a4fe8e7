package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

// This file is the wire end of the data path: wireguard-go hands encrypted
// packets to Bind.Send and pulls them from the ReceiveFuncs returned by
// Bind.Open. One UDP socket on one configured address carries every peer.
//
// Where the relay goes: a TURN allocation becomes a second ReceiveFunc
// returned by Open (next to bindSocket.receive), its packets carrying
// endpoints that name the relay path; Send then routes such endpoints to the
// allocation instead of the socket. Nothing below assumes one ReceiveFunc.

const (
	// defaultSocketBuffer is BindConfig.SocketBuffer's default, the same
	// 7 MiB wireguard-go's StdNetBind asks for.
	defaultSocketBuffer = 7 << 20

	// bindBatchSize is the most packets one Send or one receive handles.
	bindBatchSize = conn.IdealBatchSize

	// UDP GSO limits (Linux udp_send_skb): the payload of one segmented
	// send must fit one IP datagram, and the kernel splits at most 64
	// segments. IPv6's payload length excludes its own header.
	gsoMaxSegments  = 64
	gsoMaxPayloadV4 = 1<<16 - 1 - 20 - 8
	gsoMaxPayloadV6 = 1<<16 - 1 - 8
	groBufferSize   = 1 << 16 // a GRO read may fill up to 64 KiB

	// bindOOBSize is the control buffer per message, room for one UDP_GRO
	// or UDP_SEGMENT control message with headroom.
	bindOOBSize = 64
)

// BindConfig configures a Bind.
type BindConfig struct {
	// ListenAddr is required: the one local address the socket binds, e.g.
	// 127.0.0.1:0, 0.0.0.0:41641 or [::]:0. An IPv4 address opens an
	// IPv4-only socket; the IPv6 unspecified address opens a dual-stack
	// one. If its port is 0 and Open is called with a non-zero port, that
	// port is used.
	ListenAddr netip.AddrPort
	// SocketBuffer is optional: SO_RCVBUF and SO_SNDBUF in bytes, default
	// 7 MiB. On Linux the FORCE variants are tried first (they need
	// CAP_NET_ADMIN) and failures fall back silently to what the kernel
	// allows.
	SocketBuffer int
	// Logger is optional, default slog.Default().
	Logger *slog.Logger
	// PacketConn is optional, default nil: a real UDP socket on ListenAddr.
	// When set, Open uses it instead of opening a socket (ListenAddr,
	// SocketBuffer and SetMark do not apply), for tests and custom
	// transports such as pion's vnet; batching and GSO/GRO are off on it:
	// one datagram per receive call, one WriteTo per packet, and SendTTL
	// sends with the default TTL. Its addresses must be *net.UDPAddr. The
	// Bind never closes it, because wireguard-go closes and re-opens its
	// Bind (device Up): Close sets a past read deadline to end blocked
	// reads and Open clears it. Whoever created it closes it.
	PacketConn net.PacketConn
}

// BindStats are cumulative counters since NewBind.
type BindStats struct {
	RxPackets uint64 // datagrams handed to wireguard-go
	RxBytes   uint64
	TxPackets uint64 // datagrams accepted by the kernel
	TxBytes   uint64
	RxDrops   uint64 // datagrams received but dropped (truncated, unusable source, batch overflow)
	// KernelDrops are datagrams the kernel dropped for the current socket
	// before we read them (receive buffer full): /proc/net/udp's drops,
	// Linux only, since the socket was opened.
	KernelDrops uint64
	RxErrors    uint64 // failed receive calls, not counting Close
	TxErrors    uint64 // failed Send calls
}

// Bind is agentnet's conn.Bind: one UDP socket on BindConfig.ListenAddr
// with batched reads and writes (recvmmsg/sendmmsg on Linux, plus UDP
// GSO/GRO where the kernel has them; one datagram per call elsewhere), or
// a caller's BindConfig.PacketConn (one datagram per call, no offloads).
//
// Concurrency: Send may be called from any number of goroutines; each
// ReceiveFunc from one goroutine at a time (as wireguard-go does). Open,
// Close and SetMark are serialized. Close makes blocked and later calls of
// the ReceiveFuncs from that Open return net.ErrClosed; Send returns
// net.ErrClosed while the Bind is closed. A Bind may be opened again after
// Close.
//
// Buffers: Send does not retain bufs after it returns; a ReceiveFunc writes
// only into the bufs it is given (a datagram larger than its buffer is
// dropped and counted). With GRO, receive batches should be a multiple of
// 64 (wireguard-go passes BatchSize) or a full coalesced read may not fit.
type Bind struct {
	cfg     BindConfig
	log     *slog.Logger
	msgs    sync.Pool // *[]ipv6.Message of bindBatchSize, see getMsgs
	scratch sync.Pool // *[][]byte, GRO read buffers, see getScratch

	sock atomic.Pointer[bindSocket] // nil while closed; read lock-free by Send

	mu   sync.Mutex // serializes Open, Close, SetMark; guards the field below
	mark uint32     // SO_MARK to apply on Open (0 = none)

	rxPackets, rxBytes, rxDrops, rxErrors atomic.Uint64
	txPackets, txBytes, txErrors          atomic.Uint64
}

var (
	_ conn.Bind     = (*Bind)(nil)
	_ conn.Endpoint = (*UDPEndpoint)(nil)
)

// NewBind returns a closed Bind; wireguard-go opens it on device Up.
func NewBind(cfg BindConfig) *Bind {
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = defaultSocketBuffer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &Bind{cfg: cfg, log: cfg.Logger}
	b.msgs.New = func() any {
		// ipv4.Message and ipv6.Message are both x/net's socket.Message.
		msgs := make([]ipv6.Message, bindBatchSize)
		for i := range msgs {
			msgs[i].Buffers = make(net.Buffers, 1)
			msgs[i].OOB = make([]byte, 0, bindOOBSize)
		}
		return &msgs
	}
	return b
}

// bindPlatform is implemented by *Bind in bind_linux.go. Elsewhere Bind uses
// portable defaults: buffer sizes through net.UDPConn, no SO_MARK, no UDP
// offloads.
type bindPlatform interface {
	// tuneSocket sets buffer sizes beyond the portable ones and enables
	// what the kernel offers; it reports UDP GSO (tx) and GRO (rx).
	tuneSocket(uc *net.UDPConn, bufSize int) (txOffload, rxOffload bool)
	setSocketMark(uc *net.UDPConn, mark uint32) error
	// appendGSO appends a UDP_SEGMENT control message to oob.
	appendGSO(oob []byte, segSize uint16) []byte
	// groSize returns the segment size of a coalesced read, 0 if none.
	groSize(oob []byte) int
	// truncated reports MSG_TRUNC in a received message's flags.
	truncated(flags int) bool
}

// bindBatchConn is what ipv4.PacketConn and ipv6.PacketConn share.
type bindBatchConn interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
	WriteBatch(ms []ipv6.Message, flags int) (int, error)
}

// bindSocket is one opened socket. Its fields are fixed at Open except the
// offload switches, which only ever go from on to off.
type bindSocket struct {
	pc     net.PacketConn // BindConfig.PacketConn; then uc and bc are nil (bind_packetconn.go)
	uc     *net.UDPConn
	bc     bindBatchConn
	local  netip.AddrPort
	v4only bool
	tx     atomic.Bool // UDP GSO on send
	rx     atomic.Bool // UDP GRO on receive
}

// Open binds the socket and returns its single ReceiveFunc.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sock.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	if b.cfg.PacketConn != nil {
		return b.openPacketConn()
	}
	la := b.cfg.ListenAddr
	if !la.IsValid() {
		return nil, 0, errors.New("overlay: bind: ListenAddr is required")
	}
	if la.Port() == 0 && port != 0 {
		la = netip.AddrPortFrom(la.Addr(), port)
	}
	addr := la.Addr()
	network := "udp6"
	switch {
	case addr.Unmap().Is4():
		network = "udp4"
		la = netip.AddrPortFrom(addr.Unmap(), la.Port())
	case addr.IsUnspecified():
		network = "udp" // [::] with "udp" is dual-stack (IPV6_V6ONLY off)
	}
	uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(la))
	if err != nil {
		return nil, 0, fmt.Errorf("overlay: bind %s: %w", la, err)
	}
	s := &bindSocket{uc: uc, v4only: network == "udp4"}
	s.local = uc.LocalAddr().(*net.UDPAddr).AddrPort()
	if s.v4only {
		s.bc = ipv4.NewPacketConn(uc)
	} else {
		s.bc = ipv6.NewPacketConn(uc)
	}
	// Portable sizes first; on Linux tuneSocket then tries beyond rmem_max.
	_ = uc.SetReadBuffer(b.cfg.SocketBuffer)
	_ = uc.SetWriteBuffer(b.cfg.SocketBuffer)
	if p, ok := any(b).(bindPlatform); ok {
		tx, rx := p.tuneSocket(uc, b.cfg.SocketBuffer)
		s.tx.Store(tx)
		s.rx.Store(rx)
		if b.mark != 0 {
			if err := p.setSocketMark(uc, b.mark); err != nil {
				uc.Close()
				return nil, 0, fmt.Errorf("overlay: bind %s: set mark: %w", la, err)
			}
		}
	}
	b.sock.Store(s)
	b.log.Debug("bind open", "endpoint", s.local, "gso", s.tx.Load(), "gro", s.rx.Load())
	return []conn.ReceiveFunc{b.receiveFunc(s)}, s.local.Port(), nil
}

// Close closes the socket; it is safe to call on a closed Bind.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sock.Swap(nil)
	if s == nil {
		return nil
	}
	if s.pc != nil {
		return s.pc.SetReadDeadline(time.Now()) // not ours to close; see BindConfig.PacketConn
	}
	return s.uc.Close()
}

// SetMark sets SO_MARK on the socket (Linux) now and on later Opens. It is a
// no-op on other platforms.
func (b *Bind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mark = mark
	p, ok := any(b).(bindPlatform)
	s := b.sock.Load()
	if !ok || s == nil || s.pc != nil {
		return nil
	}
	if err := p.setSocketMark(s.uc, mark); err != nil {
		return fmt.Errorf("overlay: bind: set mark: %w", err)
	}
	return nil
}

// BatchSize is the most packets per Send and per ReceiveFunc call.
func (b *Bind) BatchSize() int { return bindBatchSize }

// LocalAddr is the bound address after Open, the zero AddrPort while closed.
func (b *Bind) LocalAddr() netip.AddrPort {
	if s := b.sock.Load(); s != nil {
		return s.local
	}
	return netip.AddrPort{}
}

// Stats returns the counters.
func (b *Bind) Stats() BindStats {
	return BindStats{
		RxPackets: b.rxPackets.Load(),
		RxBytes:   b.rxBytes.Load(),
		TxPackets: b.txPackets.Load(),
		TxBytes:   b.txBytes.Load(),
		RxDrops:   b.rxDrops.Load(),
		RxErrors:  b.rxErrors.Load(),
		TxErrors:  b.txErrors.Load(),
		KernelDrops: func() uint64 {
			d, _ := b.sock.Load().socketDrops()
			return d
		}(),
	}
}

// ParseEndpoint parses "ip:port" (IPv6 in brackets) into a *UDPEndpoint.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("overlay: parse endpoint: %w", err)
	}
	if ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return nil, fmt.Errorf("overlay: parse endpoint %q: not a unicast address and port", s)
	}
	return newUDPEndpoint(ap), nil
}

func (b *Bind) getMsgs() *[]ipv6.Message { return b.msgs.Get().(*[]ipv6.Message) }

// putMsgs resets the messages and drops references to caller buffers.
func (b *Bind) putMsgs(msgs *[]ipv6.Message, used int) {
	for i := range (*msgs)[:used] {
		m := &(*msgs)[i]
		clear(m.Buffers)
		*m = ipv6.Message{Buffers: m.Buffers[:1], OOB: m.OOB[:0]}
	}
	b.msgs.Put(msgs)
}

// Send writes bufs to ep in as few system calls as the platform allows.
// With GSO, runs of equal-sized packets leave as one segmented send built
// from the caller's buffers (one iovec each, no copy).
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*UDPEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	s := b.sock.Load()
	if s == nil {
		return net.ErrClosed
	}
	if len(bufs) > bindBatchSize {
		b.txErrors.Add(1)
		return fmt.Errorf("overlay: bind: send batch of %d exceeds %d", len(bufs), bindBatchSize)
	}
	if s.pc != nil {
		return b.sendPacketConn(s, bufs, e)
	}
	dst := e.dst
	if s.v4only && !dst.Addr().Is4() {
		b.txErrors.Add(1)
		return fmt.Errorf("overlay: send to %s from IPv4 socket: %w", dst, errAddrFamily)
	}
	ua := e.ua
	msgs := b.getMsgs()
	var (
		n   int
		err error
	)
	if s.tx.Load() {
		n = b.coalesce(s, *msgs, bufs, ua, dst.Addr().Is6())
		err = writeAll(s.bc, (*msgs)[:n])
		if err != nil {
			// Some NICs and tunnels refuse segmentation (wireguard-go sees
			// EIO). Retry plainly; if that works, GSO was the problem.
			b.putMsgs(msgs, n)
			msgs = b.getMsgs()
			n = fillPlain(*msgs, bufs, ua)
			if err2 := writeAll(s.bc, (*msgs)[:n]); err2 == nil {
				s.tx.Store(false)
				b.log.Info("bind: UDP GSO disabled", "endpoint", dst, "reason", "segmented send failed", "err", err)
				err = nil
			}
		}
	} else {
		n = fillPlain(*msgs, bufs, ua)
		err = writeAll(s.bc, (*msgs)[:n])
	}
	b.putMsgs(msgs, n)
	if err != nil {
		b.txErrors.Add(1)
		return err
	}
	var bytes int
	for _, p := range bufs {
		bytes += len(p)
	}
	b.txPackets.Add(uint64(len(bufs)))
	b.txBytes.Add(uint64(bytes))
	return nil
}

var errAddrFamily = errors.New("address family not supported by this bind")

func fillPlain(msgs []ipv6.Message, bufs [][]byte, ua *net.UDPAddr) int {
	for i, p := range bufs {
		msgs[i].Buffers[0] = p
		msgs[i].Addr = ua
	}
	return len(bufs)
}

// coalesce packs bufs into GSO messages: a message takes following buffers
// of its first buffer's size, and a shorter one ends it (Linux requires all
// segments but the last to be equal).
func (b *Bind) coalesce(s *bindSocket, msgs []ipv6.Message, bufs [][]byte, ua *net.UDPAddr, v6 bool) int {
	maxPayload := gsoMaxPayloadV4
	if v6 {
		maxPayload = gsoMaxPayloadV6
	}
	p := any(b).(bindPlatform) // tx offload is only ever on with a platform
	base, segSize, segs, total, closed := -1, 0, 0, 0, true
	flush := func() {
		if base >= 0 && segs > 1 {
			msgs[base].OOB = p.appendGSO(msgs[base].OOB, uint16(segSize))
		}
	}
	for _, buf := range bufs {
		if !closed && len(buf) <= segSize && segs < gsoMaxSegments && total+len(buf) <= maxPayload {
			msgs[base].Buffers = append(msgs[base].Buffers, buf)
			segs++
			total += len(buf)
			closed = len(buf) < segSize
			continue
		}
		flush()
		base++
		msgs[base].Buffers[0] = buf
		msgs[base].Addr = ua
		segSize, segs, total, closed = len(buf), 1, len(buf), len(buf) == 0
	}
	flush()
	return base + 1
}

// writeAll loops because WriteBatch may write fewer messages than given
// (and writes only one per call off Linux).
func writeAll(bc bindBatchConn, msgs []ipv6.Message) error {
	for len(msgs) > 0 {
		n, err := bc.WriteBatch(msgs, 0)
		if err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

func (b *Bind) receiveFunc(s *bindSocket) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return b.receive(s, bufs, sizes, eps)
	}
}

// receive reads one batch. Without GRO it reads straight into bufs. With
// GRO one read may hold up to 64 datagrams, so it reads len(bufs)/64
// messages into scratch buffers of 64 KiB and copies the segments out;
// StdNetBind's in-place split copies every segment too, and this way the
// caller's buffers may be any size.
func (b *Bind) receive(s *bindSocket, bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	if len(bufs) > bindBatchSize {
		bufs = bufs[:bindBatchSize]
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	plat, _ := any(b).(bindPlatform)
	gro := plat != nil && s.rx.Load()
	msgs := b.getMsgs()
	m := (*msgs)[:len(bufs)]
	var scratch *[][]byte
	if gro {
		scratch = b.getScratch()
		m = m[:max(1, len(bufs)/gsoMaxSegments)]
		for i := range m {
			m[i].Buffers[0] = (*scratch)[i]
		}
	} else {
		for i := range m {
			m[i].Buffers[0] = bufs[i]
		}
	}
	for i := range m {
		m[i].OOB = m[i].OOB[:cap(m[i].OOB)]
	}
	defer func() {
		b.putMsgs(msgs, len(m))
		if scratch != nil {
			b.scratch.Put(scratch)
		}
	}()
	got, err := s.bc.ReadBatch(m, 0)
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return 0, net.ErrClosed
		}
		b.rxErrors.Add(1)
		return 0, err
	}
	var (
		n     int
		last  *UDPEndpoint // shared by a run of datagrams from one source
		bytes int
	)
	emit := func(size int, from net.Addr) {
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			b.rxDrops.Add(1)
			return
		}
		ap := ua.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if last == nil || last.dst != ap {
			// x/net allocated ua for this read only; keep it for Send.
			last = &UDPEndpoint{dst: ap, ua: ua}
		}
		sizes[n], eps[n] = size, last
		bytes += size
		n++
	}
	for i := range m[:got] {
		msg := &m[i]
		if plat != nil && plat.truncated(msg.Flags) {
			b.rxDrops.Add(1)
			continue
		}
		if !gro {
			emit(msg.N, msg.Addr)
			continue
		}
		seg := plat.groSize(msg.OOB[:msg.NN])
		if seg <= 0 {
			seg = msg.N
		}
		for off := 0; off < msg.N; off += seg {
			end := min(off+seg, msg.N)
			if n >= len(bufs) || end-off > len(bufs[n]) {
				b.rxDrops.Add(1) // batch too small for the read, or a datagram too big for its buffer
				continue
			}
			copy(bufs[n], msg.Buffers[0][off:end])
			emit(end-off, msg.Addr)
		}
	}
	b.rxPackets.Add(uint64(n))
	b.rxBytes.Add(uint64(bytes))
	return n, nil
}

// getScratch returns bindBatchSize/64 buffers of 64 KiB for GRO reads.
func (b *Bind) getScratch() *[][]byte {
	if v := b.scratch.Get(); v != nil {
		return v.(*[][]byte)
	}
	bufs := make([][]byte, bindBatchSize/gsoMaxSegments)
	for i := range bufs {
		bufs[i] = make([]byte, groBufferSize)
	}
	return &bufs
}

// UDPEndpoint is a peer's UDP address as seen by Bind. It is immutable, so
// one value may be shared by many received packets.
//
// It keeps no sticky source address: Bind owns one socket on one
// configured address, so the source is always Bind.LocalAddr.
type UDPEndpoint struct {
	dst netip.AddrPort // unmapped
	ua  *net.UDPAddr   // dst for the socket API; never mutated
}

// newUDPEndpoint returns the endpoint for ap, IPv4-mapped addresses unmapped.
func newUDPEndpoint(ap netip.AddrPort) *UDPEndpoint {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return &UDPEndpoint{dst: ap, ua: net.UDPAddrFromAddrPort(ap)}
}

// AddrPort returns the destination address.
func (e *UDPEndpoint) AddrPort() netip.AddrPort { return e.dst }

// ClearSrc is a no-op: there is no cached source.
func (e *UDPEndpoint) ClearSrc() {}

// SrcToString returns "": there is no cached source.
func (e *UDPEndpoint) SrcToString() string { return "" }

// SrcIP returns the zero Addr: there is no cached source.
func (e *UDPEndpoint) SrcIP() netip.Addr { return netip.Addr{} }

// DstIP returns the peer's IP.
func (e *UDPEndpoint) DstIP() netip.Addr { return e.dst.Addr() }

// DstToString returns "ip:port".
func (e *UDPEndpoint) DstToString() string { return e.dst.String() }

// DstToBytes returns the address and port in binary form; WireGuard mixes
// it into the cookie MAC (WireGuard paper §5.4.7).
func (e *UDPEndpoint) DstToBytes() []byte {
	out, _ := e.dst.MarshalBinary()
	return out
}
