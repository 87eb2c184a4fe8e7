package coordinator

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/wire"
)

// Node reports (wire.PathReport) and the admin audit API
// (wire.PathAdminAudit).

// Node report limits: a token bucket per node of reportBurst reports,
// refilled at one per reportEvery. At most maxReportFieldLen bytes per
// string field of an event.
const (
	reportEvery       = time.Second
	reportBurst       = 10
	maxReportFieldLen = 128
	maxReportLimiters = 4096
	maxAuditWait      = 25 * time.Second // below the admin client's 30 s timeout
)

// reportLimiter is a token bucket per node DID.
type reportLimiter struct {
	mu      sync.Mutex // guards buckets
	buckets map[string]*reportBucket
}

type reportBucket struct {
	tokens float64
	last   time.Time
}

func (l *reportLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil || len(l.buckets) >= maxReportLimiters {
		l.buckets = make(map[string]*reportBucket) // full: start over (the limit only loosens)
	}
	b := l.buckets[key]
	if b == nil {
		b = &reportBucket{tokens: reportBurst, last: now}
		l.buckets[key] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(reportBurst, b.tokens+d.Seconds()/reportEvery.Seconds())
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// remoteHost is the client's IP without port.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// handleReport takes a node's batch of security events and writes them as
// one node_report record.
func (c *Coordinator) handleReport(w http.ResponseWriter, r *http.Request) error {
	var req wire.ReportRequest
	self, err := c.nodeRequest(w, r, &req)
	if err != nil {
		return err
	}
	if err := checkReport(&req); err != nil {
		return err
	}
	if !c.reports.allow(self.DID, c.now()) {
		return refuse(http.StatusTooManyRequests, wire.CodeRateLimited,
			"node %s sends reports too often (at most %d in a burst, then one per %v); keep the events and send them later", self.Name, reportBurst, reportEvery)
	}
	if len(req.Events) == 0 && req.Dropped == 0 {
		w.WriteHeader(http.StatusNoContent) // nothing to record
		return nil
	}
	var denied, up, down uint64
	for _, e := range req.Events {
		switch e.Kind {
		case wire.ReportDenial:
			denied += max(e.Count, 1)
		case wire.ReportChannelUp:
			up++
		case wire.ReportChannelDown:
			down++
		}
	}
	c.audit.Record(audit.KindNodeReport, "actor", self.DID, "actor_name", self.Name, "remote", r.RemoteAddr, "subject", self.Name,
		"events", req.Events, "dropped", req.Dropped, "denied_packets", denied, "channels_up", up, "channels_down", down)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkReport bounds what a node may put in a report.
func checkReport(req *wire.ReportRequest) error {
	if len(req.Events) > wire.MaxReportEvents {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "%d events in one report, at most %d", len(req.Events), wire.MaxReportEvents)
	}
	for i, e := range req.Events {
		switch e.Kind {
		case wire.ReportDenial, wire.ReportChannelUp, wire.ReportChannelDown:
		default:
			return refuse(http.StatusBadRequest, wire.CodeBadRequest, "event %d: unknown kind %.40q", i, e.Kind)
		}
		for _, s := range []string{e.Peer, e.Dir, e.Proto, e.Rule, e.Reason, e.Path} {
			if len(s) > maxReportFieldLen {
				return refuse(http.StatusBadRequest, wire.CodeBadRequest, "event %d: a field is longer than %d bytes", i, maxReportFieldLen)
			}
		}
	}
	return nil
}

// handleAuditTail serves GET wire.PathAdminAudit?n=&after=&wait=.
func (c *Coordinator) handleAuditTail(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	n, after, hasAfter, wait, err := parseTailQuery(q)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var deadline <-chan time.Time
	if wait > 0 && hasAfter {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		changed := c.audit.Changed()
		page, err := c.audit.Tail(after, hasAfter, n)
		if err != nil {
			return err
		}
		if len(page.Records) > 0 || deadline == nil {
			writeJSON(w, http.StatusOK, page)
			return nil
		}
		select {
		case <-changed:
		case <-deadline:
			deadline = nil
		case <-ctx.Done():
			return refuse(http.StatusServiceUnavailable, wire.CodeInternal, "coordinator is shutting down")
		}
	}
}

func parseTailQuery(q url.Values) (n int, after uint64, hasAfter bool, wait time.Duration, err error) {
	n = 20
	if s := q.Get("n"); s != "" {
		if n, err = strconv.Atoi(s); err != nil || n < 1 || n > wire.MaxAuditPage {
			return 0, 0, false, 0, refuse(http.StatusBadRequest, wire.CodeBadRequest, "n=%.20q: want 1..%d", s, wire.MaxAuditPage)
		}
	}
	if s := q.Get("after"); s != "" {
		if after, err = strconv.ParseUint(s, 10, 64); err != nil {
			return 0, 0, false, 0, refuse(http.StatusBadRequest, wire.CodeBadRequest, "after=%.20q is not a seq", s)
		}
		hasAfter = true
	}
	if s := q.Get("wait"); s != "" {
		secs, err := strconv.Atoi(s)
		if err != nil || secs < 0 || time.Duration(secs)*time.Second > maxAuditWait {
			return 0, 0, false, 0, refuse(http.StatusBadRequest, wire.CodeBadRequest, "wait=%.20q: want 0..%d seconds", s, int(maxAuditWait/time.Second))
		}
		wait = time.Duration(secs) * time.Second
	}
	return n, after, hasAfter, wait, nil
}
