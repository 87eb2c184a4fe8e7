package adminclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// Audit returns audit records through the admin API: see
// wire.PathAdminAudit. wait > 0 with hasAfter holds the call until a
// record newer than after exists or wait (at most 25 s) passes.
func (a *Client) Audit(ctx context.Context, n int, after uint64, hasAfter bool, wait time.Duration) (wire.AuditPage, error) {
	q := url.Values{"n": {strconv.Itoa(n)}}
	if hasAfter {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if wait > 0 {
		q.Set("wait", strconv.Itoa(int(wait/time.Second)))
	}
	var page wire.AuditPage
	err := a.do(ctx, http.MethodGet, wire.PathAdminAudit+"?"+q.Encode(), nil, &page)
	return page, err
}
