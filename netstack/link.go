package netstack

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// link is the state shared by both sides of the seam. Its two faces are
// distinct named types over the same struct, because gVisor's LinkEndpoint
// and wireguard-go's tun.Device both have MTU and Close with different
// signatures:
//   - *linkEndpoint (this file): the gVisor stack.LinkEndpoint; packets
//     leaving the stack are queued by WritePackets.
//   - *linkTUN (tun.go): the batched tun.Device; Read drains and segments
//     the queue, Write injects decrypted packets through GRO.
//
// Converting between *link, *linkEndpoint and *linkTUN is free.
//
// Lock order: readMu before out's mu (Read pops under readMu; close takes
// readMu only after closing out). writeMu is never held with either: the
// inbound direction shares only atomics with the outbound one.
type link struct {
	log *slog.Logger
	mtu atomic.Uint32

	// dispatcher is the NIC's NetworkDispatcher set by Attach (nil when
	// detached). It is an atomic so that Write never takes a lock that
	// gVisor's RemoveNIC (which calls Attach(nil)) might hold.
	dispatcher atomic.Pointer[dispatcherBox]

	out *pktQueue // stack → wireguard

	// readMu serializes Read and guards the fields below.
	readMu  sync.Mutex
	cur     *stack.PacketBuffer // packet being segmented, or nil
	seg     tcpSegmenter        // segmentation state of cur
	scratch []byte              // flattened cur (GSO packets only)

	// writeMu serializes Write (wireguard-go calls it from one goroutine
	// per peer) and guards gro.
	writeMu sync.Mutex
	gro     gro.GRO

	events    chan tun.Event
	closeOnce sync.Once
	closed    chan struct{}

	stats linkStats
}

// dispatcherBox lets an interface value live in an atomic.Pointer.
type dispatcherBox struct{ d stack.NetworkDispatcher }

// linkStats are the data-path counters, all atomic.
type linkStats struct {
	outPackets   atomic.Uint64 // packets returned by Read
	outGSO       atomic.Uint64 // large segments split by Read
	outDropped   atomic.Uint64 // queue full/closed, or buffer too small
	outMaxBatch  atomic.Uint64 // largest batch one Read returned
	inPackets    atomic.Uint64 // packets accepted by Write
	inDropped    atomic.Uint64 // not IPv4/IPv6, or no NIC attached
	readBatches  atomic.Uint64 // Read calls that returned packets
	writeBatches atomic.Uint64 // Write calls
}

// linkEndpoint is the gVisor face of link.
type linkEndpoint link

var (
	_ stack.LinkEndpoint = (*linkEndpoint)(nil)
	_ stack.GSOEndpoint  = (*linkEndpoint)(nil)
)

func newLink(mtu int, log *slog.Logger) *link {
	l := &link{
		log:     log,
		out:     newPktQueue(outQueuePackets, outQueueBytes),
		scratch: make([]byte, gsoMaxSize+header.IPv6MinimumSize+header.TCPHeaderMaximumSize),
		events:  make(chan tun.Event, 1),
		closed:  make(chan struct{}),
	}
	l.mtu.Store(uint32(mtu))
	l.gro.Init(true)
	l.events <- tun.EventUp
	return l
}

// MTU implements stack.LinkEndpoint. gVisor derives the TCP MSS from it.
func (l *linkEndpoint) MTU() uint32 { return l.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (l *linkEndpoint) SetMTU(mtu uint32) { l.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: there is no link header.
func (*linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: a TUN has no link address.
func (*linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint; ignored.
func (*linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint.
//
// We deliberately do not claim CapabilityTXChecksumOffload: gVisor then
// checksums every non-GSO packet itself, and Read completes the checksums
// of GSO packets (gso.go).
//
// We do claim CapabilityRXChecksumOffload: the NIC overwrites each inbound
// packet's RXChecksumValidated from it (stack/nic.go DeliverNetworkPacket),
// so it is the only way to skip verification. Why that is safe is written
// at linkTUN.Write. It is also required for GRO: merged IPv4 packets get a
// new total length but not a new header checksum.
func (*linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// Attach implements stack.LinkEndpoint.
func (l *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.dispatcher.Store(nil)
		return
	}
	l.dispatcher.Store(&dispatcherBox{d: d})
}

// IsAttached implements stack.LinkEndpoint.
func (l *linkEndpoint) IsAttached() bool { return l.dispatcher.Load() != nil }

// Wait implements stack.LinkEndpoint: the endpoint owns no goroutines.
func (*linkEndpoint) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (*linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint: no link header.
func (*linkEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint: no link header.
func (*linkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint; unused.
func (*linkEndpoint) SetOnCloseAction(func()) {}

// GSOMaxSize implements stack.GSOEndpoint.
func (*linkEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO implements stack.GSOEndpoint.
//
// We answer HostGSOSupported, not GVisorGSOSupported. In this gVisor
// version (transport/tcp/connect.go, sendTCP → sendTCPBatch) a GSOGvisor
// endpoint makes TCP split every large segment into MSS-sized packets
// itself before the network layer, so WritePackets never sees one; a
// "host" GSO endpoint instead receives the whole segment (up to
// GSOMaxSize) tagged GSOTCPv4/GSOTCPv6 with MSS and a partial checksum,
// exactly what a TSO NIC gets. gso.go plays that NIC.
func (*linkEndpoint) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// WritePackets implements stack.LinkWriter: packets leaving the stack are
// queued for Read. It never blocks; on overflow the rest of the list is
// dropped, counted, and reported as ErrNoBufferSpace (as Linux reports
// ENOBUFS), which TCP treats as loss.
func (l *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if !l.out.push(pkt) {
			dropped := uint64(pkts.Len() - n)
			l.stats.outDropped.Add(dropped)
			if l.out.isClosed() {
				return n, &tcpip.ErrClosedForSend{}
			}
			return n, &tcpip.ErrNoBufferSpace{}
		}
		n++
	}
	return n, nil
}

// Close implements stack.LinkEndpoint (called when the NIC is removed).
// It closes the tun.Device side too.
func (l *linkEndpoint) Close() { (*link)(l).close() }
