package turnclient

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Liveness of an allocation. A relay that restarts forgets its
// allocations, but nothing tells the client: on UDP the socket looks fine,
// and pion notices only when the next allocation refresh fails (minutes
// later; issue 17 measured 284 s of a cut relayed pair). So while nothing
// arrives from the relay, the allocation is probed every ProbeInterval
// with a CreatePermission (RFC 8656 §10), a request the relay answers only
// when it holds the allocation: pion/turn's server looks the allocation up
// before anything else and sends no answer when it has none. Any answer,
// a grant or a refusal, proves the allocation; none within ProbeTimeout
// (which covers pion's first retransmissions) marks it dead, and the
// caller allocates again and republishes its relayed address.

// Defaults of Config.ProbeInterval and Config.ProbeTimeout: a dead
// allocation is found within ProbeInterval (a tick) + ProbeInterval (the
// quiet tick that starts the probe) + ProbeTimeout = 4 s.
const (
	DefaultProbeInterval = time.Second
	DefaultProbeTimeout  = 2 * time.Second
)

// watch probes the allocation while it is quiet, until Close or death.
// Owner: the Allocation (Close waits for it, and for a probe in flight).
func (a *Allocation) watch(interval, timeout time.Duration) {
	defer a.watchWG.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-a.closing:
			return
		case <-a.dead:
			return
		case <-t.C:
		}
		if a.rxSeen.Swap(false) {
			continue // the relay delivered since the last tick
		}
		if !a.probe(timeout) {
			a.markDead(fmt.Errorf("turnclient: the relay did not answer for the allocation within %v (restarted?)", timeout))
			return
		}
	}
}

// probe asks for a permission the allocation has (the last IP given to
// Permit) or, before any, for the relay's own address, and reports
// whether the relay answered within timeout.
func (a *Allocation) probe(timeout time.Duration) bool {
	ip := a.server.Addr()
	if p := a.probeIP.Load(); p != nil {
		ip = *p
	}
	done := make(chan struct{})
	a.watchWG.Add(1)
	go func() {
		defer a.watchWG.Done()
		// pion ends the transaction at an answer, after its last
		// retransmission, or at client.Close.
		_ = a.client.CreatePermission(&net.UDPAddr{IP: ip.AsSlice()})
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-a.closing:
		return true
	case <-t.C:
		return false
	}
}

// setProbeIP remembers an IP the allocation has a permission for.
func (a *Allocation) setProbeIP(ip netip.Addr) { a.probeIP.Store(&ip) }
