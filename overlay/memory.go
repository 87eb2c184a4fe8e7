package overlay

import (
	"runtime/debug"
	"time"
)

// Returning a large map's garbage. Applying a map of 1,000 peers (read,
// verify, decode, diff, re-encode for the cache) leaves ~20 MiB of
// garbage, while the live heap is large but mostly never touched
// (wireguard-go's preallocated 64 KiB message buffers): the GC goal is
// far above what is resident, so that garbage stayed in RSS (an idle node
// with 1,000 peers: 53 MiB instead of 30). After a large map the node
// collects and returns freed memory to the OS, at most once per
// freeMemoryEvery and freeMemoryDelay after the last such map, so a burst
// of maps costs one collection (freeMemory* in constants.go).

// wantFreeMemory asks memoryLoop to return freed memory (never blocks).
func (n *Node) wantFreeMemory() {
	select {
	case n.freeMem <- struct{}{}:
	default:
	}
}

// memoryLoop runs debug.FreeOSMemory when asked (see above). Owner: Node
// (n.wg); it ends with n.ctx.
func (n *Node) memoryLoop() {
	defer n.wg.Done()
	var last time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.freeMem:
		}
		wait := max(freeMemoryDelay, freeMemoryEvery-n.now().Sub(last))
		if !sleepCtx(n.ctx, wait) {
			return
		}
		select { // maps that arrived meanwhile are covered by this one
		case <-n.freeMem:
		default:
		}
		debug.FreeOSMemory()
		last = n.now()
	}
}
