package coordinator

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// ErrNoAddresses means the IPv4 pool has no free address left.
var ErrNoAddresses = errors.New("coordinator: no free overlay address left")

// codeNoAddresses is the ErrorResponse code for an exhausted pool. It is
// local until wire grows a code for it.
const codeNoAddresses = wire.CodeNoAddresses

// Address plan: every node gets one IPv4 from Prefix4 and the IPv6 with the
// same host offset inside the coordinator's ULA /48 (RFC 4193), so the two
// addresses of a node are easy to tell apart and to correlate.

// checkPrefix4 validates an IPv4 pool: IPv4, canonical, and at least two
// usable host addresses (network and broadcast are never handed out).
func checkPrefix4(p netip.Prefix) error {
	switch {
	case !p.IsValid() || !p.Addr().Is4():
		return fmt.Errorf("coordinator: Prefix4 %v is not an IPv4 prefix", p)
	case p.Masked() != p:
		return fmt.Errorf("coordinator: Prefix4 %v has host bits set (did you mean %v?)", p, p.Masked())
	case p.Bits() > 30 || p.Bits() < 8:
		return fmt.Errorf("coordinator: Prefix4 %v must be between /8 and /30", p)
	}
	return nil
}

// hostCount is the number of addresses in an IPv4 prefix (2^(32-bits)).
func hostCount(p netip.Prefix) uint32 { return 1 << (32 - p.Bits()) }

// addrAt returns the address at host offset off inside p.
func addrAt(p netip.Prefix, off uint32) netip.Addr {
	b := p.Addr().As4()
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(b[:])+off)))
}

// hostOffset returns a's offset inside p.
func hostOffset(p netip.Prefix, a netip.Addr) uint32 {
	x, y := a.As4(), p.Addr().As4()
	return binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(y[:])
}

// nextFree returns the first usable address of p after host offset last,
// wrapping around once, and its offset. Network and broadcast addresses and
// wire.DefaultDNSIP are skipped, as is every address taken reports.
// Allocation is sequential so a freed address is reused only after the pool
// wrapped, which keeps stale peers' caches from pointing at a new node.
func nextFree(p netip.Prefix, last uint32, taken func(netip.Addr) (bool, error)) (netip.Addr, uint32, error) {
	size := hostCount(p)
	off := last
	for range size {
		off = (off + 1) % size
		if off == 0 || off == size-1 {
			continue // network, broadcast
		}
		a := addrAt(p, off)
		if a == wire.DefaultDNSIP {
			continue
		}
		used, err := taken(a)
		if err != nil {
			return netip.Addr{}, 0, err
		}
		if !used {
			return a, off, nil
		}
	}
	return netip.Addr{}, 0, fmt.Errorf("%w in %v", ErrNoAddresses, p)
}

// allocate hands out the next IPv4 of p and its IPv6 twin inside ula,
// advancing the stored cursor. It must run in the Update that stores the node.
func allocate(tx store.Tx, p, ula netip.Prefix) (v4, v6 netip.Addr, err error) {
	var last uint32
	if b, err := tx.Meta(metaCursor4); err != nil {
		return v4, v6, err
	} else if b != nil {
		n, err := strconv.ParseUint(string(b), 10, 32)
		if err != nil {
			return v4, v6, fmt.Errorf("store: bad IPAM cursor %q: %w", b, err)
		}
		last = uint32(n)
	}
	v4, off, err := nextFree(p, last, func(a netip.Addr) (bool, error) {
		_, ok, err := tx.AddrOwner(a)
		return ok, err
	})
	if err != nil {
		return v4, v6, err
	}
	if err := tx.PutMeta(metaCursor4, strconv.AppendUint(nil, uint64(off), 10)); err != nil {
		return v4, v6, err
	}
	return v4, ula6(ula, off), nil
}

// ula6 returns the address at host offset off inside the /48 ula.
func ula6(ula netip.Prefix, off uint32) netip.Addr {
	b := ula.Addr().As16()
	binary.BigEndian.PutUint32(b[12:], off)
	return netip.AddrFrom16(b)
}

// newULA returns a random RFC 4193 ULA /48: fd00::/8 plus a 40-bit random
// global ID.
func newULA() netip.Prefix {
	var b [16]byte
	b[0] = 0xfd
	_, _ = rand.Read(b[1:6]) // crypto/rand.Read never fails (Go 1.24+)
	return netip.PrefixFrom(netip.AddrFrom16(b), 48)
}
