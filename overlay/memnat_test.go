package overlay

import (
	"net/netip"
	"time"
)

// memNAT is a minimal Linux NAT (MASQUERADE over conntrack) on a memNet,
// enough to reproduce the conntrack clash that pre-punching avoids
// (probe.go):
//
//   - Mapping: a datagram from a socket behind the NAT to a remote address
//     leaves from the NAT's public address, with the socket's own port
//     unless that (public port, remote) pair is taken by another entry; then
//     with another port (the clash).
//   - Filtering: a datagram from the outside passes only if an entry maps
//     its (public port, remote) pair to a socket: the remote must be one we
//     sent to, from that port (endpoint-dependent, like conntrack).
//   - A datagram from the outside that matches nothing is dropped, but
//     leaves an UNREPLIED entry for its (public port, remote) pair, as the
//     router's own conntrack does; further datagrams refresh it.
//   - Entries expire ctUnreplied after their last datagram, or ctReplied
//     once traffic went both ways (nf_conntrack_udp_timeout and
//     nf_conntrack_udp_timeout_stream).
//
// Its state is guarded by memNet.mu. The clock is time.Now: the bubble's.
type memNAT struct {
	public   netip.Addr
	nextPort uint16 // for clashes
	entries  []*ctEntry
	clashes  int // mappings that could not keep their port
}

const (
	ctUnreplied = 30 * time.Second
	ctReplied   = 120 * time.Second
)

type ctEntry struct {
	inside  netip.AddrPort // the socket; invalid: an inbound datagram that went nowhere
	outside netip.AddrPort // public address and port
	remote  netip.AddrPort
	replied bool
	expires time.Time
}

func (e *ctEntry) refresh(now time.Time) {
	if e.replied {
		e.expires = now.Add(ctReplied)
	} else {
		e.expires = now.Add(ctUnreplied)
	}
}

// newNAT puts the sockets behind a NAT with public address public.
func (n *memNet) newNAT(public netip.Addr, socks ...*memSocket) *memNAT {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.behind == nil {
		n.behind, n.nats = map[netip.AddrPort]*memNAT{}, map[netip.Addr]*memNAT{}
	}
	nat := &memNAT{public: public, nextPort: 30000}
	n.nats[public] = nat
	for _, s := range socks {
		n.behind[s.addr] = nat
	}
	return nat
}

// publicAddr is where a socket behind nat appears when its port is kept.
func (nat *memNAT) publicAddr(s *memSocket) netip.AddrPort {
	return netip.AddrPortFrom(nat.public, s.addr.Port())
}

func (nat *memNAT) expire(now time.Time) {
	kept := nat.entries[:0]
	for _, e := range nat.entries {
		if now.Before(e.expires) {
			kept = append(kept, e)
		}
	}
	clear(nat.entries[len(kept):])
	nat.entries = kept
}

func (nat *memNAT) find(outside, remote netip.AddrPort) *ctEntry {
	for _, e := range nat.entries {
		if e.outside == outside && e.remote == remote {
			return e
		}
	}
	return nil
}

// out maps a datagram from inside to remote; it returns its public source.
func (nat *memNAT) out(inside, remote netip.AddrPort) netip.AddrPort {
	now := time.Now()
	nat.expire(now)
	for _, e := range nat.entries {
		if e.inside == inside && e.remote == remote {
			e.refresh(now)
			return e.outside
		}
	}
	outside := netip.AddrPortFrom(nat.public, inside.Port())
	if nat.find(outside, remote) != nil {
		nat.clashes++
		for nat.find(netip.AddrPortFrom(nat.public, nat.nextPort), remote) != nil {
			nat.nextPort++
		}
		outside = netip.AddrPortFrom(nat.public, nat.nextPort)
		nat.nextPort++
	}
	e := &ctEntry{inside: inside, outside: outside, remote: remote}
	e.refresh(now)
	nat.entries = append(nat.entries, e)
	return outside
}

// in filters a datagram from remote to our public address to; it returns
// the socket it goes to, ok false if dropped.
func (nat *memNAT) in(remote, to netip.AddrPort) (netip.AddrPort, bool) {
	now := time.Now()
	nat.expire(now)
	e := nat.find(to, remote)
	if e == nil {
		e = &ctEntry{outside: to, remote: remote}
		nat.entries = append(nat.entries, e)
	}
	if !e.inside.IsValid() {
		e.refresh(now) // UNREPLIED, and kept so by every further datagram
		return netip.AddrPort{}, false
	}
	e.replied = true
	e.refresh(now)
	return e.inside, true
}

// unreplied counts the inbound entries that went nowhere (the stale ones).
func (nat *memNAT) unreplied() int {
	nat.expire(time.Now())
	k := 0
	for _, e := range nat.entries {
		if !e.inside.IsValid() {
			k++
		}
	}
	return k
}

// natStats reads a NAT's clash count and its UNREPLIED inbound entries.
func (n *memNet) natStats(nat *memNAT) (clashes, unreplied int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return nat.clashes, nat.unreplied()
}

// natIdle reports whether nat holds no entry towards remote (every mapping
// to it expired).
func (n *memNet) natIdle(nat *memNAT, remote netip.AddrPort) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	nat.expire(time.Now())
	for _, e := range nat.entries {
		if e.remote == remote {
			return false
		}
	}
	return true
}
