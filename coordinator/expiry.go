package coordinator

import (
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// Node identity expiry. A join token created with a node TTL
// (wire.CreateTokenRequest.NodeTTLSeconds) gives the nodes it enrolls an
// expiry (wire.Node.Expires). Once Config.Now passes it the node is
// retired exactly like a revocation, with state wire.StateExpired: its
// requests are refused with wire.CodeNodeExpired and every map drops it.
//
// Two paths get there, whichever comes first: the sweeper below checks the
// snapshot every expirySweepInterval (so peers lose an expired node within
// about that, even if it is silent), and authNode/handleEnroll expire a
// node that calls in after its expiry.

// expirySweepInterval is how often the sweeper compares the node set with
// the clock. It reads the in-memory snapshot: O(nodes) comparisons, no I/O.
const expirySweepInterval = time.Second

// errExpireFirst tells handleEnroll, inside its transaction, that the node
// must be expired (in a transaction of its own) and refused.
var errExpireFirst = errors.New("node identity expired")

// expired reports whether n's identity has expired at now.
func expired(n wire.Node, now time.Time) bool {
	return !n.Expires.IsZero() && !now.Before(n.Expires)
}

// sweeper runs sweepExpired periodically; Close stops it before the store
// closes.
type sweeper struct {
	stop chan struct{}
	done chan struct{}
}

func (c *Coordinator) startSweeper() {
	c.sweep = sweeper{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.sweep.done)
		t := time.NewTicker(expirySweepInterval)
		defer t.Stop()
		for {
			select {
			case <-c.sweep.stop:
				return
			case <-t.C:
				c.sweepExpired()
			}
		}
	}()
}

// stopSweeper ends the sweeper and waits for it; safe if it never started.
func (c *Coordinator) stopSweeper() {
	if c.sweep.stop == nil {
		return
	}
	close(c.sweep.stop)
	<-c.sweep.done
}

// sweepExpired expires every node of the snapshot whose expiry has passed.
func (c *Coordinator) sweepExpired() {
	now := c.now()
	for _, n := range c.snap.Load().nodes {
		if !expired(n, now) {
			continue
		}
		if err := c.expire(n.DID); err != nil && !isRefusal(err, wire.CodeNodeExpired) && !errors.Is(err, store.ErrClosed) {
			c.log.Error("coordinator: expire node", "node", n.Name, "err", err)
		}
	}
}

func isRefusal(err error, code string) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.code == code
}

// expire retires did if its identity has expired, pushes the change, and
// returns the refusal its requests get from now on (CodeNodeExpired). A
// node that is gone or not expired (the clock or record changed) is left
// alone; the refusal it gets then is whatever refuseGone says.
func (c *Coordinator) expire(did string) error {
	var rec wire.Revocation
	var done bool
	err := c.store.Update(func(tx store.Tx) error {
		n, ok, err := tx.Node(did)
		if err != nil {
			return err
		}
		if !ok {
			return c.refuseGone(tx, did)
		}
		if !expired(n, c.now()) {
			return refuse(http.StatusServiceUnavailable, wire.CodeInternal, "node %s expiry changed while expiring it; retry", n.Name)
		}
		rec, err = retireNode(tx, n, wire.StateExpired, "identity expired at "+n.Expires.UTC().Format(time.RFC3339), c.now())
		done = err == nil
		return err
	})
	if err != nil {
		return err
	}
	if done {
		c.kick(did)
		c.log.Warn("coordinator: node identity expired; dropped from the network", "node", rec.Node.Name, "did", did, "expires", rec.Node.Expires)
		c.event(eventExpire, slog.String("node", rec.Node.Name), slog.String("did", did), slog.Time("expires", rec.Node.Expires))
		if err := c.changed(); err != nil {
			return err
		}
	}
	return refuseRevoked(rec)
}

// handleRevocations lists revoked and expired identities, newest first.
func (c *Coordinator) handleRevocations(w http.ResponseWriter, r *http.Request) error {
	var recs []wire.Revocation
	if err := c.store.View(func(tx store.Tx) (err error) {
		recs, err = tx.Revocations()
		return err
	}); err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b wire.Revocation) int { return b.At.Compare(a.At) })
	if recs == nil {
		recs = []wire.Revocation{}
	}
	writeJSON(w, http.StatusOK, recs)
	return nil
}
