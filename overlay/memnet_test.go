package overlay

import (
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/agentnet/agentnet/wire"
)

// memNet is an in-memory UDP network for peerBind tests inside a
// testing/synctest bubble: sockets and relay allocations are channels, so
// a receive blocks durably and the bubble's fake clock moves on while every
// goroutine waits. Create it inside the bubble.
//
// Datagrams between sockets pass unless blocked (a NAT that lets nothing
// through); a datagram sent with a TTL (pre-punch) expires on the way. A
// datagram to an allocation's relayed address arrives at the allocation
// with the sender's address, and what the allocation sends arrives from
// its relayed address: a TURN relay without permissions. A socket may sit
// behind a NAT (memnat_test.go): its datagrams leave from the NAT's public
// address, and datagrams to that address pass only as the NAT allows.
type memNet struct {
	mu      sync.Mutex // guards the fields below and every memNAT's
	inboxes map[netip.AddrPort]chan memPkt
	block   func(src, dst netip.AddrPort) bool // nil: nothing blocked; sees the source after our NAT
	next    uint16
	behind  map[netip.AddrPort]*memNAT // socket address → the NAT it sits behind
	nats    map[netip.Addr]*memNAT     // public address → NAT
}

type memPkt struct {
	b    []byte
	from netip.AddrPort
}

func newMemNet() *memNet { return &memNet{inboxes: map[netip.AddrPort]chan memPkt{}, next: 1000} }

func (n *memNet) newAddr(inbox chan memPkt) netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	ap := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), n.next)
	if inbox != nil {
		n.inboxes[ap] = inbox
	}
	return ap
}

// setBlock drops datagrams between sockets that f matches; nil lifts it.
func (n *memNet) setBlock(f func(src, dst netip.AddrPort) bool) {
	n.mu.Lock()
	n.block = f
	n.mu.Unlock()
}

// deliver queues a copy of b for to; full inboxes and unknown or blocked
// destinations drop it, as UDP would.
func (n *memNet) deliver(from, to netip.AddrPort, b []byte, direct bool) {
	n.mu.Lock()
	if nat := n.behind[from]; nat != nil {
		from = nat.out(from, to)
	}
	blocked := direct && n.block != nil && n.block(from, to)
	if nat := n.nats[to.Addr()]; nat != nil && !blocked {
		var ok bool
		if to, ok = nat.in(from, to); !ok {
			blocked = true
		}
	}
	inbox := n.inboxes[to]
	n.mu.Unlock()
	if inbox == nil || blocked {
		return
	}
	select {
	case inbox <- memPkt{b: append([]byte(nil), b...), from: from}:
	default:
	}
}

// memSocket is a socket on a memNet.
type memSocket struct {
	net  *memNet
	addr netip.AddrPort
	rx   chan memPkt

	mu     sync.Mutex // guards closed
	closed chan struct{}
}

var _ socket = (*memSocket)(nil)

func (n *memNet) socket() *memSocket {
	s := &memSocket{net: n, rx: make(chan memPkt, 256)}
	s.addr = n.newAddr(s.rx)
	return s
}

func (s *memSocket) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	closed := make(chan struct{})
	s.closed = closed
	return []conn.ReceiveFunc{func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var p memPkt
		select {
		case p = <-s.rx:
		case <-closed:
			return 0, net.ErrClosed
		}
		n := 0
		for {
			sizes[n] = copy(packets[n], p.b)
			eps[n] = newUDPEndpoint(p.from)
			n++
			if n == len(packets) {
				return n, nil
			}
			select {
			case p = <-s.rx:
			default:
				return n, nil
			}
		}
	}}, s.addr.Port(), nil
}

func (s *memSocket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed != nil {
		close(s.closed)
		s.closed = nil
	}
	return nil
}

func (s *memSocket) Send(bufs [][]byte, ep conn.Endpoint) error {
	to := ep.(*UDPEndpoint).AddrPort()
	for _, b := range bufs {
		s.net.deliver(s.addr, to, b, true)
	}
	return nil
}

// SendTTL: the pre-punch's short TTL passes our own NAT (if any), opening
// its mapping, and expires before it arrives anywhere.
func (s *memSocket) SendTTL(_ []byte, to netip.AddrPort, _ int) error {
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	if nat := s.net.behind[s.addr]; nat != nil {
		nat.out(s.addr, to)
	}
	return nil
}

func (s *memSocket) ParseEndpoint(str string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(str)
	if err != nil {
		return nil, err
	}
	return newUDPEndpoint(ap), nil
}

func (s *memSocket) SetMark(uint32) error      { return nil }
func (s *memSocket) BatchSize() int            { return 8 }
func (s *memSocket) LocalAddr() netip.AddrPort { return s.addr }

// memAlloc is a relay allocation on a memNet.
type memAlloc struct {
	net     *memNet
	relay   wire.Relay
	relayed netip.AddrPort
	rx      chan memPkt
	done    chan struct{}
	once    sync.Once
}

var _ allocation = (*memAlloc)(nil)

func (n *memNet) alloc(r wire.Relay) *memAlloc {
	a := &memAlloc{net: n, relay: r, rx: make(chan memPkt, 256), done: make(chan struct{})}
	a.relayed = n.newAddr(a.rx)
	return a
}

func (a *memAlloc) Relay() wire.Relay           { return a.relay }
func (a *memAlloc) Transport() string           { return wire.TransportUDP }
func (a *memAlloc) RelayedAddr() netip.AddrPort { return a.relayed }
func (a *memAlloc) Dropped() uint64             { return 0 }

func (a *memAlloc) WriteTo(p []byte, to netip.AddrPort) error {
	a.net.deliver(a.relayed, to, p, false)
	return nil
}

func (a *memAlloc) ReadFrom(p []byte) (int, netip.AddrPort, error) {
	select {
	case m := <-a.rx:
		return copy(p, m.b), m.from, nil
	case <-a.done:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

func (a *memAlloc) Close() { a.once.Do(func() { close(a.done) }) }
