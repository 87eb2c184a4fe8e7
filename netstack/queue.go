package netstack

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// pktQueue is the bounded outbound queue between gVisor (producer, in
// WritePackets on any gVisor goroutine) and the tun.Device reader
// (consumer, wireguard-go's RoutineReadFromTUN). It never blocks the
// producer: when full, push drops and reports it, which TCP repairs by
// retransmission like any lossy link.
//
// It is bounded twice: by packet count (ring size) and by bytes, because a
// single GSO packet may be 64 KiB.
type pktQueue struct {
	mu   sync.Mutex // guards the fields below
	cond sync.Cond  // signalled on push and close; L is &mu

	ring     []*stack.PacketBuffer // len is the packet bound
	head     int                   // index of the oldest packet
	count    int                   // packets queued
	bytes    int                   // bytes queued
	maxBytes int
	closed   bool
}

func newPktQueue(maxPkts, maxBytes int) *pktQueue {
	q := &pktQueue{ring: make([]*stack.PacketBuffer, maxPkts), maxBytes: maxBytes}
	q.cond.L = &q.mu
	return q
}

// push enqueues pkt, taking a reference of its own. It returns false if the
// queue is full or closed (pkt is then untouched: the caller still owns only
// its own reference).
func (q *pktQueue) push(pkt *stack.PacketBuffer) bool {
	size := pkt.Size()
	q.mu.Lock()
	if q.closed || q.count == len(q.ring) || (q.count > 0 && q.bytes+size > q.maxBytes) {
		q.mu.Unlock()
		return false
	}
	q.ring[(q.head+q.count)%len(q.ring)] = pkt.IncRef()
	q.count++
	q.bytes += size
	q.mu.Unlock()
	q.cond.Signal()
	return true
}

// pop dequeues the oldest packet. If wait is set it blocks while the queue
// is empty and open. It returns nil if nothing is queued (or, when waiting,
// only once the queue is closed and drained of nothing: packets still queued
// at close are released by close, not returned). The caller owns the
// returned reference.
func (q *pktQueue) pop(wait bool) *stack.PacketBuffer {
	q.mu.Lock()
	defer q.mu.Unlock()
	for wait && q.count == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.count == 0 || q.closed {
		return nil
	}
	pkt := q.ring[q.head]
	q.ring[q.head] = nil
	q.head = (q.head + 1) % len(q.ring)
	q.count--
	q.bytes -= pkt.Size()
	return pkt
}

// isClosed reports whether close was called.
func (q *pktQueue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// close releases queued packets, wakes every blocked pop and makes later
// push calls fail. It is idempotent.
func (q *pktQueue) close() {
	q.mu.Lock()
	q.closed = true
	for q.count > 0 {
		q.ring[q.head].DecRef()
		q.ring[q.head] = nil
		q.head = (q.head + 1) % len(q.ring)
		q.count--
	}
	q.bytes = 0
	q.mu.Unlock()
	q.cond.Broadcast()
}
