package overlay

import (
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// dropSocket decorates a peerBind's socket for tests: it drops datagrams to
// and from the addresses drop matches, both ways, as a NAT that lets nothing
// through would. Traffic through a relay allocation does not pass the
// socket and is not affected; neither is traffic to the relay's own
// addresses unless drop matches them.
type dropSocket struct {
	socket
	drop atomic.Pointer[func(netip.AddrPort) bool] // nil: drop nothing
}

var _ socket = (*dropSocket)(nil)

// set makes the socket drop what f matches; nil lifts it.
func (d *dropSocket) set(f func(netip.AddrPort) bool) {
	if f == nil {
		d.drop.Store(nil)
		return
	}
	d.drop.Store(&f)
}

func (d *dropSocket) dropped(ap netip.AddrPort) bool {
	f := d.drop.Load()
	return f != nil && (*f)(ap)
}

func (d *dropSocket) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := d.socket.Open(port)
	if err != nil {
		return nil, 0, err
	}
	for i, fn := range fns {
		fns[i] = d.receive(fn)
	}
	return fns, actual, nil
}

// receive drops the packets from matching sources, moving the rest to the
// front (by copying: the caller's buffers stay where they are). It reads
// again when a whole batch was dropped.
func (d *dropSocket) receive(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			n, err := fn(packets, sizes, eps)
			kept := 0
			for i := range n {
				if u, ok := eps[i].(*UDPEndpoint); ok && d.dropped(u.AddrPort()) {
					continue
				}
				if kept != i {
					sizes[kept] = copy(packets[kept], packets[i][:sizes[i]])
					eps[kept] = eps[i]
				}
				kept++
			}
			if kept > 0 || n == 0 || err != nil {
				return kept, err
			}
		}
	}
}

func (d *dropSocket) Send(bufs [][]byte, ep conn.Endpoint) error {
	if u, ok := ep.(*UDPEndpoint); ok && d.dropped(u.AddrPort()) {
		return nil
	}
	return d.socket.Send(bufs, ep)
}

func (d *dropSocket) SendTTL(pkt []byte, dst netip.AddrPort, ttl int) error {
	if d.dropped(dst) {
		return nil
	}
	return d.socket.SendTTL(pkt, dst, ttl)
}
