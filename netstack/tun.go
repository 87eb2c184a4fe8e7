package netstack

import (
	"os"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// linkTUN is the wireguard-go face of link: a batched tun.Device.
//
// Buffer ownership: Read writes packets into the caller's bufs at
// bufs[i][offset:] and keeps no reference to them after returning. Write
// copies each packet out of bufs before returning, so the caller may reuse
// bufs immediately.
//
// Concurrency: Read may be called from any number of goroutines but calls
// are serialized (wireguard-go uses one). Write is safe for concurrent use
// (wireguard-go calls it from one goroutine per peer); calls are serialized
// because GRO state is shared. Read and Write run in parallel.
//
// Close: makes a blocked or later Read return os.ErrClosed, later Writes
// return os.ErrClosed, closes the Events channel, and drops queued
// outbound packets. It does not close the gVisor stack (Stack.Close does,
// and closes this device too); it is idempotent.
type linkTUN link

var _ tun.Device = (*linkTUN)(nil)

// File implements tun.Device: there is no file descriptor.
func (*linkTUN) File() *os.File { return nil }

// Name implements tun.Device.
func (*linkTUN) Name() (string, error) { return "agentnet", nil }

// MTU implements tun.Device.
func (t *linkTUN) MTU() (int, error) { return int(t.mtu.Load()), nil }

// Events implements tun.Device: it yields tun.EventUp once and is closed by
// Close.
func (t *linkTUN) Events() <-chan tun.Event { return t.events }

// BatchSize implements tun.Device.
func (*linkTUN) BatchSize() int { return batchSize }

// Close implements tun.Device; see the type comment.
func (t *linkTUN) Close() error {
	(*link)(t).close()
	return nil
}

// Read implements tun.Device: outbound packets (stack → WireGuard). It
// blocks until at least one packet is queued, then fills as many of bufs as
// the queue allows without blocking again, splitting large TCP segments
// into MTU-sized packets (gso.go) so one 64 KiB segment fills a batch.
func (t *linkTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	l := (*link)(t)
	l.readMu.Lock()
	defer l.readMu.Unlock()
	n := 0
	for n < len(bufs) {
		if l.cur != nil {
			k, err := l.seg.fill(bufs[n:], sizes[n:], offset)
			n += k
			if err != nil {
				l.stats.outDropped.Add(1)
			}
			if l.seg.done() {
				l.cur.DecRef()
				l.cur = nil
			}
			continue
		}
		pkt := l.out.pop(n == 0)
		if pkt == nil {
			break
		}
		if l.load(pkt, bufs[n][offset:], &sizes[n]) {
			n++
		}
	}
	if n == 0 {
		return 0, os.ErrClosed
	}
	l.stats.outPackets.Add(uint64(n))
	l.stats.readBatches.Add(1)
	if uint64(n) > l.stats.outMaxBatch.Load() {
		l.stats.outMaxBatch.Store(uint64(n))
	}
	return n, nil
}

// load takes ownership of pkt. A packet that fits one wire packet is copied
// straight into dst (its length stored in *size) and load returns true. A
// TCP segment larger than its MSS is flattened into l.scratch and becomes
// l.cur for the segmenter; load then returns false. Called with readMu held.
func (l *link) load(pkt *stack.PacketBuffer, dst []byte, size *int) bool {
	gso := pkt.GSOOptions
	isTCPGSO := gso.Type == stack.GSOTCPv4 || gso.Type == stack.GSOTCPv6
	ipLen := len(pkt.NetworkHeader().Slice())
	tcpLen := len(pkt.TransportHeader().Slice())
	total := pkt.Size()
	if isTCPGSO && (ipLen < header.IPv4MinimumSize || tcpLen < header.TCPMinimumSize) {
		// Cannot happen with gVisor's TCP; never emit a bad checksum.
		l.stats.outDropped.Add(1)
		pkt.DecRef()
		return false
	}
	if isTCPGSO && total-ipLen-tcpLen > int(gso.MSS) && gso.MSS > 0 {
		if total > len(l.scratch) {
			l.stats.outDropped.Add(1)
			pkt.DecRef()
			return false
		}
		copyPacket(l.scratch, pkt)
		l.stats.outGSO.Add(1)
		l.cur = pkt
		l.seg.reset(l.scratch[:total], gso.Type == stack.GSOTCPv6, ipLen, tcpLen, int(gso.MSS))
		return false
	}
	defer pkt.DecRef()
	if total > len(dst) {
		l.stats.outDropped.Add(1)
		return false
	}
	copyPacket(dst, pkt)
	if isTCPGSO && gso.NeedsCsum {
		// gVisor left only the pseudo-header sum (CHECKSUM_PARTIAL).
		setTCPChecksum(dst[:total], gso.Type == stack.GSOTCPv6, ipLen, total-ipLen)
	}
	*size = total
	return true
}

// copyPacket copies the whole packet (headers and data) into dst, which
// must be at least pkt.Size() bytes, without allocating.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	vl, off := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
	}
	return n
}

// Write implements tun.Device: inbound packets (WireGuard → stack). Each
// packet is copied into a gVisor buffer and handed to GRO, which coalesces
// consecutive segments of one TCP flow; GRO is flushed at the end of each
// batch, so no packet waits for a later Write.
//
// Packets are marked RXChecksumValidated (and the link claims
// CapabilityRXChecksumOffload, which the NIC turns into the same flag).
// That is safe here: every packet
// reaching Write was decrypted by WireGuard, whose ChaCha20-Poly1305 tag
// authenticates every byte of it (WireGuard paper §5.4.6), so corruption
// in transit is already excluded; the checksum could only be wrong if the
// authenticated peer's own stack made it so, and such a peer can send any
// packet it likes anyway. gVisor still validates IP and TCP lengths and
// header fields. GRO needs it too: it updates the IPv4 total length and TCP
// payload of merged packets without recomputing either checksum. (In the
// back-to-back tests the packets come straight from another gVisor stack,
// whose checksums gso_test.go and the pump check independently.)
func (t *linkTUN) Write(bufs [][]byte, offset int) (int, error) {
	l := (*link)(t)
	select {
	case <-l.closed:
		return 0, os.ErrClosed
	default:
	}
	box := l.dispatcher.Load()
	if box == nil {
		// Detached NIC: the stack is going away.
		l.stats.inDropped.Add(uint64(len(bufs)))
		return 0, os.ErrClosed
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.stats.writeBatches.Add(1)
	l.gro.Dispatcher = box.d
	for _, b := range bufs {
		if len(b) <= offset {
			continue
		}
		p := b[offset:]
		var proto = header.IPv4ProtocolNumber
		switch p[0] >> 4 {
		case 4:
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			l.stats.inDropped.Add(1)
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			Payload: buffer.MakeWithData(p),
		})
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true
		l.gro.Enqueue(pkt)
		pkt.DecRef()
		l.stats.inPackets.Add(1)
	}
	l.gro.Flush()
	return len(bufs), nil
}

// close shuts the tun.Device side: idempotent, safe from any goroutine,
// including gVisor's (linkEndpoint.Close).
func (l *link) close() {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.out.close() // wakes a Read blocked in pop
		close(l.events)
		// A Read in progress returns promptly now; release the packet it
		// may have left half-segmented.
		l.readMu.Lock()
		if l.cur != nil {
			l.cur.DecRef()
			l.cur = nil
			l.seg = tcpSegmenter{}
		}
		l.readMu.Unlock()
	})
}
