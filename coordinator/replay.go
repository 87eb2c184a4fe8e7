package coordinator

import (
	"container/heap"
	"net/http"
	"sync"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// The replay cache: every node-signed request carries a random nonce
// covered by its signature (wire.HeaderNonce), and the coordinator accepts
// a (signer, nonce) once. A request's time must be within
// wire.MaxClockSkew of the coordinator's clock, so an entry is needed only
// until its time leaves that window; after it the time check refuses the
// request anyway. Before this, a byte-identical signed /v1/update was
// accepted again anywhere in the ±5 min window (issue 17, item 3).
//
// Memory is bounded: entries are evicted by time, at most maxPerSigner per
// identity and maxTotal in all. A request that finds its signer's share or
// the whole cache full is refused with 429 CodeRateLimited and a
// Retry-After until the oldest entry leaves (remembering fewer nonces
// would let replays in). Only signers the coordinator knows take entries
// (enrolled nodes; an enrollment's entry is dropped again if it is
// refused), so strangers cannot fill the cache with fresh identities.
//
// The cache is in memory: a coordinator restarted within the window
// forgets it. Signed requests are bound to it by the pinned TLS
// connection, so a replay needs a request captured at a TLS endpoint.

// Defaults of the replay cache's bounds.
const (
	// replayPerSigner is far above what a node sends in 5 minutes (updates,
	// reports, probes and stream opens: a few per minute) and bounds what
	// one identity can make the coordinator remember.
	replayPerSigner = 4096
	// replayTotal bounds the whole cache: about 150 bytes an entry, 20 MB.
	replayTotal = 1 << 17
)

type replayKey struct {
	did   string
	nonce [wire.NonceSize]byte
}

type replayEntry struct {
	key   replayKey
	until time.Time // the request's time + MaxClockSkew
}

// replayHeap orders entries by until (container/heap).
type replayHeap []replayEntry

func (h replayHeap) Len() int           { return len(h) }
func (h replayHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h replayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *replayHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *replayHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// replayCache remembers the (signer, nonce) of accepted signed requests.
// It is safe for concurrent use.
type replayCache struct {
	perSigner, total int

	mu       sync.Mutex // guards the fields below
	seen     map[replayKey]time.Time
	bySigner map[string]int
	order    replayHeap
}

func newReplayCache(perSigner, total int) *replayCache {
	if perSigner <= 0 {
		perSigner = replayPerSigner
	}
	if total <= 0 {
		total = replayTotal
	}
	return &replayCache{perSigner: perSigner, total: total, seen: map[replayKey]time.Time{}, bySigner: map[string]int{}}
}

// claim records a's nonce at now, or refuses it: 409 CodeReplayed if it
// was seen, 429 CodeRateLimited with a retry time if a bound is reached.
func (rc *replayCache) claim(a wire.RequestAuth, now time.Time) *apiError {
	k := replayKey{a.DID, a.Nonce}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.expireLocked(now)
	if _, ok := rc.seen[k]; ok {
		return refuse(http.StatusConflict, wire.CodeReplayed,
			"request replayed: its nonce was already used by %s; every signed request is accepted once (a client sends a fresh nonce per request)", a.DID)
	}
	if rc.bySigner[a.DID] >= rc.perSigner || len(rc.seen) >= rc.total {
		// Retry when the oldest entry leaves: an upper bound for the
		// signer's share, exact for the whole cache.
		wait := max(rc.order[0].until.Sub(now), time.Second)
		return refuse(http.StatusTooManyRequests, wire.CodeRateLimited,
			"too many signed requests in the last %v (replay cache full); retry in %s s", wire.MaxClockSkew, retryAfter(wait)).retry(wait)
	}
	until := a.Time.Add(wire.MaxClockSkew)
	rc.seen[k] = until
	rc.bySigner[a.DID]++
	heap.Push(&rc.order, replayEntry{k, until})
	return nil
}

// release forgets a claimed nonce (a refused enrollment: see the type
// comment). The heap entry stays until it expires; expireLocked skips it.
func (rc *replayCache) release(a wire.RequestAuth) {
	k := replayKey{a.DID, a.Nonce}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, ok := rc.seen[k]; ok {
		rc.forgetLocked(k)
	}
}

// expireLocked drops the entries whose window ended before now.
func (rc *replayCache) expireLocked(now time.Time) {
	for len(rc.order) > 0 && rc.order[0].until.Before(now) {
		e := heap.Pop(&rc.order).(replayEntry)
		if until, ok := rc.seen[e.key]; ok && until.Equal(e.until) {
			rc.forgetLocked(e.key)
		}
	}
}

func (rc *replayCache) forgetLocked(k replayKey) {
	delete(rc.seen, k)
	if rc.bySigner[k.did]--; rc.bySigner[k.did] <= 0 {
		delete(rc.bySigner, k.did)
	}
}

// len returns the number of remembered nonces.
func (rc *replayCache) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.seen)
}
