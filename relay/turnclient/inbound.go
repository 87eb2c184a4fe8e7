package turnclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/net/ipv4"

	"github.com/agentnet/agentnet/internal/udpgso"
	"github.com/agentnet/agentnet/relay/internal/udpbatch"
)

// The receive side of an Allocation. pion/turn's client reads the
// connection in its own loop, copies every relayed packet twice and hands
// it over a per-packet channel. Instead the Allocation runs its own loop
// (readLoop): it reads the connection in batches (recvmmsg and UDP GRO on
// UDP), decodes ChannelData (RFC 8656 §12.4) and Data indications (§11.4)
// itself, passes everything else (transaction responses) to pion's
// HandleInbound, and hands whole batches of payloads to ReadFrom.

const (
	// rxQueue bounds the batches read but not yet handed to ReadFrom.
	// With the one ReadFrom holds and the one being filled, at most
	// rxQueue+2 batches exist (made as needed); when all are full,
	// readLoop waits and the socket's receive buffer holds the rest.
	rxQueue = 8
	// rxBatchBytes is one batch's buffer: several reads go into it
	// while ReadFrom is busy.
	rxBatchBytes = 256 << 10
	// rxFrameBuf holds one frame on TCP/TLS (STUNConn reads one at a
	// time) and one datagram on UDP without GRO.
	rxFrameBuf = 2048
)

// channelFinder is the part of pion's relayed conn that maps channel
// numbers to peers (client.UDPConn.FindAddrByChannelNumber).
type channelFinder interface {
	FindAddrByChannelNumber(chNum uint16) (net.Addr, bool)
}

// rxPkt is one relayed payload, a slice of its batch's buffer.
type rxPkt struct {
	b    []byte
	from netip.AddrPort
}

// rxBatch is the payloads of one or more reads and the buffer they are in.
type rxBatch struct {
	buf  []byte // len: bytes used by reads so far
	msgs []ipv4.Message
	pkts []rxPkt
}

// startReading starts readLoop; closing the connection ends it (see
// Close). uc is the socket towards the relay when it is a *net.UDPConn
// (batched reads); udp says the transport is UDP, on any PacketConn.
func (a *Allocation) startReading(uc *net.UDPConn, udp bool) {
	a.readMsgs, a.readBuf = 1, rxFrameBuf
	a.udp = udp
	if uc != nil {
		a.batch = udpbatch.New(uc, true)
		a.readMsgs = udpbatch.PlainReadMsgs
		if a.batch.GRO() {
			a.readMsgs, a.readBuf = 1, udpbatch.GROBufSize
		}
	}
	a.rx = make(chan *rxBatch, rxQueue)
	a.free = make(chan *rxBatch, rxQueue+2)
	a.loopDone = make(chan struct{})
	a.closing = make(chan struct{})
	go a.readLoop()
}

func (a *Allocation) newBatch() *rxBatch {
	b := &rxBatch{buf: make([]byte, 0, rxBatchBytes), msgs: make([]ipv4.Message, a.readMsgs)}
	for i := range b.msgs {
		b.msgs[i].Buffers = [][]byte{nil}
		b.msgs[i].OOB = make([]byte, udpgso.OOBSize)
	}
	return b
}

// room reports whether b can take another read.
func (a *Allocation) room(b *rxBatch) bool {
	return cap(b.buf)-len(b.buf) >= a.readMsgs*a.readBuf
}

// readLoop reads the connection to the relay until it fails or is closed.
// Reads go into the batch being filled, which is handed to ReadFrom as
// soon as the queue has room. When the batch is full and the queue too,
// it waits for ReadFrom instead of reading on: what arrives meanwhile
// waits in the socket's receive buffer (7 MiB, as overlay.Bind's), which
// absorbs a burst that the batches (a few hundred KiB) could not. Reading
// on into a throwaway batch dropped whole bursts whenever ReadFrom's
// goroutine was descheduled for a few milliseconds, and TCP over the relay
// stalled for seconds recovering from them.
func (a *Allocation) readLoop() {
	defer close(a.loopDone)
	var msg stun.Message
	var cur *rxBatch
	made := 0
	for {
		if cur != nil && !a.room(cur) {
			// Full: hand it over, waiting for ReadFrom if need be.
			a.pending.Store(true)
			select {
			case a.rx <- cur:
				cur = nil
				a.pending.Store(false)
			case <-a.closing:
				a.readErr = net.ErrClosed
				return
			}
		}
		if cur == nil {
			select {
			case cur = <-a.free:
			default:
				if made < rxQueue+2 {
					cur = a.newBatch()
					made++
				} else {
					// Every batch is queued or with ReadFrom: wait for one.
					select {
					case cur = <-a.free:
					case <-a.closing:
						a.readErr = net.ErrClosed
						return
					}
				}
			}
			cur.buf, cur.pkts = cur.buf[:0], cur.pkts[:0]
		}
		err := a.read(cur, &msg)
		if errors.Is(err, os.ErrDeadlineExceeded) && a.batch != nil && !a.closed.Load() {
			// ReadFrom's kick: it has room for cur (UDP only).
			_ = a.batch.UDP().SetReadDeadline(time.Time{})
			err = nil
		}
		if err != nil {
			a.readErr = err
			if !a.closed.Load() {
				a.markDead(err)
			}
			return
		}
		if len(cur.pkts) > 0 {
			if !a.rxSeen.Load() {
				a.rxSeen.Store(true) // the allocation is alive: see watch
			}
			a.pending.Store(true) // before trying: see ReadFrom
			if a.batch == nil {
				// TCP/TLS: a read cannot be interrupted without
				// losing the stream's framing, so wait for ReadFrom;
				// the relay's stream waits meanwhile.
				select {
				case a.rx <- cur:
					cur = nil
				case <-a.closing:
					a.readErr = net.ErrClosed
					return
				}
			} else {
				select {
				case a.rx <- cur:
					cur = nil
				default: // ReadFrom is busy: fill cur further, or be kicked
				}
			}
			if cur == nil {
				a.pending.Store(false)
			}
		}
	}
}

// read reads once into b's free tail and parses what came.
func (a *Allocation) read(b *rxBatch, msg *stun.Message) error {
	base := len(b.buf)
	for i := range b.msgs {
		off := base + i*a.readBuf
		b.msgs[i].Buffers[0] = b.buf[off : off+a.readBuf]
		b.msgs[i].OOB = b.msgs[i].OOB[:cap(b.msgs[i].OOB)]
	}
	var n int
	if a.batch != nil {
		var err error
		if n, err = a.batch.ReadBatch(b.msgs, 0); err != nil {
			return err
		}
	} else {
		m := &b.msgs[0]
		nb, from, err := a.base.ReadFrom(m.Buffers[0])
		if err != nil {
			return err
		}
		m.N, m.NN, m.Flags, m.Addr = nb, 0, 0, from
		n = 1
	}
	if n == 0 {
		return nil
	}
	// Keep what was read: the messages sit at readBuf strides.
	b.buf = b.buf[:base+(n-1)*a.readBuf+b.msgs[n-1].N]
	for i := range b.msgs[:n] {
		a.parse(b, &b.msgs[i], msg)
	}
	return nil
}

// parse splits one message (a GRO read may hold many datagrams) into
// frames and handles each.
func (a *Allocation) parse(b *rxBatch, m *ipv4.Message, msg *stun.Message) {
	buf := m.Buffers[0][:m.N]
	if udpgso.Truncated(m.Flags) {
		a.rxDrops.Add(1)
		return
	}
	if a.udp {
		ua, ok := m.Addr.(*net.UDPAddr)
		if !ok || netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port()) != a.server {
			a.rxForeign.Add(1) // not from the relay: never handled
			return
		}
	}
	seg := len(buf)
	if g := udpgso.GROSize(m.OOB[:m.NN]); g > 0 {
		seg = g
	}
	for off := 0; off < len(buf); off += seg {
		a.frame(b, buf[off:min(off+seg, len(buf))], m.Addr, msg)
	}
}

// frame handles one frame from the relay: a relayed payload joins b, a
// transaction response goes to pion, anything malformed is dropped.
func (a *Allocation) frame(b *rxBatch, d []byte, from net.Addr, msg *stun.Message) {
	switch {
	case len(d) >= 4 && d[0]&0xC0 == 0x40: // ChannelData
		num, n := binary.BigEndian.Uint16(d), int(binary.BigEndian.Uint16(d[2:]))
		if 4+n > len(d) {
			a.rxDrops.Add(1)
			return
		}
		peer, ok := a.chanPeer(num)
		if !ok {
			a.rxDrops.Add(1)
			return
		}
		b.pkts = append(b.pkts, rxPkt{b: d[4 : 4+n], from: peer})
	case len(d) >= 20 && d[0] == 0x00 && d[1] == 0x17 && stun.IsMessage(d): // Data indication
		msg.Raw = d
		var peer stun.XORMappedAddress
		if msg.Decode() != nil || peer.GetFromAs(msg, stun.AttrXORPeerAddress) != nil {
			a.rxDrops.Add(1)
			return
		}
		data, err := msg.Get(stun.AttrData)
		ip, ok := netip.AddrFromSlice(peer.IP)
		if err != nil || !ok {
			a.rxDrops.Add(1)
			return
		}
		b.pkts = append(b.pkts, rxPkt{b: data, from: netip.AddrPortFrom(ip.Unmap(), uint16(peer.Port))})
	default:
		// pion copies what it keeps. Its own loop stops at the first
		// error; ours goes on (the relay's input is not ours to trust).
		if _, err := a.client.HandleInbound(d, from); err != nil {
			a.log.Debug("turnclient: unhandled message from relay", "err", err)
		}
	}
}

func (a *Allocation) chanPeer(num uint16) (netip.AddrPort, bool) {
	f := a.chans.Load()
	if f == nil {
		return netip.AddrPort{}, false
	}
	addr, ok := (*f).FindAddrByChannelNumber(num)
	ua, _ := addr.(*net.UDPAddr)
	if !ok || ua == nil {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// ReadFrom reads one packet a peer sent to the relayed address, and the
// peer's address as the relay saw it. After Close it returns
// net.ErrClosed; when the connection to the relay failed, that error.
func (a *Allocation) ReadFrom(p []byte) (int, netip.AddrPort, error) {
	for a.cur == nil || a.curI == len(a.cur.pkts) {
		if a.cur != nil {
			a.free <- a.cur // never blocks: free has room for every batch there is
			a.cur = nil
		}
		select {
		case a.cur = <-a.rx:
			a.curI = 0
			continue
		default:
		}
		if a.pending.Load() && a.batch != nil {
			// readLoop holds packets it could not queue and may be
			// blocked reading: wake it (it clears the deadline). Any
			// past instant does; the clock is not read.
			_ = a.batch.UDP().SetReadDeadline(time.Unix(1, 0))
		}
		select {
		case a.cur = <-a.rx:
			a.curI = 0
		case <-a.loopDone:
			select {
			case a.cur = <-a.rx: // hand out what was read before the end
				a.curI = 0
				continue
			default:
			}
			if a.closed.Load() || errors.Is(a.readErr, net.ErrClosed) {
				return 0, netip.AddrPort{}, net.ErrClosed
			}
			return 0, netip.AddrPort{}, fmt.Errorf("turnclient: read from %s: %w", a.relay.Name, a.readErr)
		}
	}
	pk := a.cur.pkts[a.curI]
	a.curI++
	return copy(p, pk.b), pk.from, nil
}

// Dropped counts relayed packets dropped on receive: truncated reads,
// malformed frames, unknown channels.
func (a *Allocation) Dropped() uint64 { return a.rxDrops.Load() }
