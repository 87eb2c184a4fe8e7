// Package udpbatch is batched UDP I/O for the relay's data path, on both
// sides of a relayed packet: the relay server (relayed sockets and the
// frames it sends on to clients) and the TURN client (an allocation's
// socket towards the relay).
package udpbatch

import (
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/agentnet/agentnet/internal/udpgso"
)

// The relay's data path. The two hot legs of a relayed
// packet are a peer's datagram arriving on an allocation's relayed socket
// and the frame (ChannelData or Data indication) the relay sends on to the
// allocation's client; pion/turn does both one datagram per system call.
// Here the relayed socket is read with recvmmsg and UDP GRO, and the
// frames for one client are gathered and sent with sendmmsg and UDP GSO
// (udp(7): UDP_GRO, UDP_SEGMENT), as overlay.Bind does on direct paths.
// Without kernel support both degrade to one datagram per message.

const (
	// maxGSOSegments is UDP_MAX_SEGMENTS of older kernels (newer: 128).
	maxGSOSegments = 64
	// maxGSOBytes keeps a GSO super-datagram under the 64 KiB IP limit
	// with its headers.
	maxGSOBytes = 65000
	// GROBufSize holds one coalesced read: up to 64 KiB.
	GROBufSize = 1 << 16
	// plainBufSize holds one datagram of a relayed socket without GRO
	// (the overlay's packets are at most ~1500 bytes).
	plainBufSize = 2048
	// PlainReadMsgs is how many datagrams one read takes without GRO.
	PlainReadMsgs = 16
	// maxWriteFrames bounds the frames gathered before a flush.
	maxWriteFrames = 128
	// maxFrame is the largest frame a Writer batches (larger ones go
	// alone): a TURN frame of a WireGuard packet of an overlay MTU up to
	// 1500, as the relay's inbound MTU.
	maxFrame = 1700
)

// batchConn is the batch-capable view of a UDP socket (x/net's
// ipv4/ipv6.PacketConn; ipv4.Message and ipv6.Message are one type).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// Conn is one UDP socket with its offloads. Safe for concurrent use.
type Conn struct {
	uc  *net.UDPConn
	bc  batchConn
	gro bool        // reads may return GRO-coalesced datagrams
	gso atomic.Bool // sends may use UDP_SEGMENT; cleared when the kernel refuses it
}

// New uses the offloads the kernel confirms on uc; GRO only with gro (a
// socket pion reads itself must never see coalesced datagrams).
func New(uc *net.UDPConn, gro bool) *Conn {
	b := &Conn{uc: uc}
	if ua, ok := uc.LocalAddr().(*net.UDPAddr); ok && ua.IP.To4() == nil {
		b.bc = ipv6.NewPacketConn(uc)
	} else {
		b.bc = ipv4.NewPacketConn(uc)
	}
	tx, rx := udpgso.Enable(uc, gro)
	b.gro = rx
	b.gso.Store(tx)
	return b
}

// UDP returns the socket.
func (b *Conn) UDP() *net.UDPConn { return b.uc }

// GRO reports whether reads may return GRO-coalesced datagrams (see
// GROSize in internal/udpgso).
func (b *Conn) GRO() bool { return b.gro }

// ReadBatch reads up to len(ms) messages (recvmmsg where the kernel has
// it); the flags are recvmmsg's.
func (b *Conn) ReadBatch(ms []ipv4.Message, flags int) (int, error) { return b.bc.ReadBatch(ms, flags) }

// Reader hands out the datagrams of a socket one by one, reading a
// batch whenever the last one is used up. One goroutine at a time.
type Reader struct {
	b    *Conn
	msgs []ipv4.Message
	n    int // messages in the current batch
	mi   int // the message being handed out
	off  int // offset of the next datagram in it
	drop func()
}

// NewReader reads b; drop (optional) counts datagrams that did not fit
// the buffer and were cut off by the kernel.
func NewReader(b *Conn, drop func()) *Reader {
	count, size := PlainReadMsgs, plainBufSize
	if b.gro {
		count, size = 1, GROBufSize
	}
	r := &Reader{b: b, drop: drop, msgs: make([]ipv4.Message, count)}
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{make([]byte, size)}
		r.msgs[i].OOB = make([]byte, udpgso.OOBSize)
	}
	return r
}

// Buffered reports whether Next has a datagram without reading the
// socket. It steps over used-up and truncated messages (counting those).
func (r *Reader) Buffered() bool {
	for r.mi < r.n {
		m := &r.msgs[r.mi]
		_, ok := m.Addr.(*net.UDPAddr)
		if ok && r.off < m.N && !udpgso.Truncated(m.Flags) {
			return true
		}
		if udpgso.Truncated(m.Flags) && r.drop != nil {
			r.drop()
		}
		r.mi++
		r.off = 0
	}
	return false
}

// Next returns the next datagram and its source, reading a batch when
// none is buffered. The bytes are valid until the next call; the address
// is shared by the datagrams of one coalesced read and must not be
// modified.
func (r *Reader) Next() ([]byte, *net.UDPAddr, error) {
	for !r.Buffered() {
		for i := range r.msgs[:r.n] {
			r.msgs[i].OOB = r.msgs[i].OOB[:cap(r.msgs[i].OOB)]
		}
		n, err := r.b.bc.ReadBatch(r.msgs, 0)
		if err != nil {
			r.n, r.mi = 0, 0
			return nil, nil, err
		}
		r.n, r.mi, r.off = n, 0, 0
	}
	m := &r.msgs[r.mi]
	buf := m.Buffers[0][:m.N]
	seg := len(buf)
	if g := udpgso.GROSize(m.OOB[:m.NN]); g > 0 {
		seg = g
	}
	end := min(r.off+seg, len(buf))
	d := buf[r.off:end]
	r.off = end
	return d, m.Addr.(*net.UDPAddr), nil
}

// writeBufs pools the byte buffers of Writers, held only between
// the first frame of a batch and its flush.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxWriteFrames*maxFrame); return &b }}

// Writer gathers frames to one destination and sends them in as few
// system calls as it can. One goroutine at a time. The zero Writer has no
// socket: use NewWriter.
type Writer struct {
	b    *Conn
	to   *net.UDPAddr
	buf  *[]byte // from writeBufs while frames are pending
	lens []int
	msgs []ipv4.Message
	oob  []byte
}

// NewWriter sends on b.
func NewWriter(b *Conn) Writer { return Writer{b: b} }

// HasConn reports whether w has a socket to send on.
func (w *Writer) HasConn() bool { return w.b != nil }

// Add queues a copy of p for to, flushing first when to differs or the
// batch is full. The error is that of such a flush or of sending p alone.
func (w *Writer) Add(p []byte, to *net.UDPAddr) error {
	if len(p) > maxWriteFrames*maxFrame {
		_, err := w.b.uc.WriteTo(p, to)
		return err
	}
	var err error
	if len(w.lens) > 0 && (len(w.lens) == maxWriteFrames || len(*w.buf)+len(p) > cap(*w.buf) ||
		(w.to != to && w.to.AddrPort() != to.AddrPort())) {
		err = w.Flush()
	}
	if w.buf == nil {
		w.buf = writeBufs.Get().(*[]byte)
	}
	w.to = to
	*w.buf = append(*w.buf, p...)
	w.lens = append(w.lens, len(p))
	return err
}

// Flush sends the pending frames: runs of equal length (the last of a
// run may be shorter) as one GSO message each, all messages in one
// sendmmsg where possible. If the kernel refuses GSO, it is turned off for
// the socket and the frames go again one per message.
func (w *Writer) Flush() error {
	if len(w.lens) == 0 {
		return nil
	}
	defer func() {
		*w.buf = (*w.buf)[:0]
		writeBufs.Put(w.buf)
		w.buf = nil
		w.lens = w.lens[:0]
	}()
	gso := w.b.gso.Load()
	err := w.send(gso)
	if err != nil && gso {
		w.b.gso.Store(false)
		err = w.send(false)
	}
	return err
}

func (w *Writer) send(gso bool) error {
	buf := *w.buf
	w.msgs = w.msgs[:0]
	w.oob = w.oob[:0]
	type group struct{ start, end, segs, seg int }
	var groups [maxWriteFrames]group
	ng := 0
	off := 0
	for i := 0; i < len(w.lens); {
		g := group{start: off, seg: w.lens[i]}
		for i < len(w.lens) {
			l := w.lens[i]
			if l > g.seg || g.segs == maxGSOSegments || off+l-g.start > maxGSOBytes {
				break
			}
			off += l
			g.segs++
			i++
			if l < g.seg || !gso {
				break // a shorter frame ends a GSO run
			}
		}
		g.end = off
		groups[ng] = g
		ng++
	}
	for _, g := range groups[:ng] {
		w.msgs = append(w.msgs, ipv4.Message{Buffers: [][]byte{buf[g.start:g.end]}, Addr: w.to})
	}
	if gso {
		// Each message's control data is its own slice of w.oob, which is
		// sized up front so that appends do not move it.
		if cap(w.oob) < ng*udpgso.OOBSize {
			w.oob = make([]byte, 0, maxWriteFrames*udpgso.OOBSize)
		}
		for i, g := range groups[:ng] {
			if g.segs > 1 {
				start := len(w.oob)
				w.oob = udpgso.AppendSegment(w.oob, uint16(g.seg))
				w.msgs[i].OOB = w.oob[start:len(w.oob):len(w.oob)]
			}
		}
	}
	for msgs := w.msgs; len(msgs) > 0; {
		n, err := w.b.bc.WriteBatch(msgs, 0)
		if err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}
