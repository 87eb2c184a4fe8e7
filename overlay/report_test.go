package overlay

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

func testReporter() *reporter {
	return newReporter(&Node{log: slog.New(slog.DiscardHandler)}, time.Second)
}

func TestReporterMergesDenials(t *testing.T) {
	r := testReporter()
	now := time.Now()
	dst := netip.MustParseAddrPort("100.96.0.2:22")
	for port := range 50 { // a scan from many source ports: one event
		r.addDenial(Denial{Dir: "in", Proto: "tcp", Src: netip.AddrPortFrom(netip.MustParseAddr("100.96.0.3"), uint16(40000+port)), Dst: dst, Peer: "b", Rule: "default-deny"}, now)
	}
	r.addDenial(Denial{Dir: "in", Proto: "udp", Dst: dst, Peer: "b", Rule: "default-deny"}, now)
	req := r.take()
	if len(req.Events) != 2 || req.Events[0].Count != 50 || req.Events[1].Count != 1 {
		t.Fatalf("events %+v", req.Events)
	}
	// After a take, the same key starts a new event.
	r.addDenial(Denial{Dir: "in", Proto: "udp", Dst: dst, Peer: "b", Rule: "default-deny"}, now)
	if req := r.take(); len(req.Events) != 1 || req.Events[0].Count != 1 {
		t.Fatalf("after take: %+v", req.Events)
	}
}

func TestReporterBoundedQueue(t *testing.T) {
	r := testReporter()
	now := time.Now()
	for i := range reportQueue + 100 {
		r.addDenial(Denial{Dir: "in", Proto: "tcp", Dst: netip.AddrPortFrom(netip.MustParseAddr("100.96.0.2"), uint16(i+1)), Rule: "r"}, now)
	}
	// The oldest 100 went; merging still finds the newer ones.
	r.addDenial(Denial{Dir: "in", Proto: "tcp", Dst: netip.AddrPortFrom(netip.MustParseAddr("100.96.0.2"), uint16(reportQueue+100)), Rule: "r"}, now)
	r.addDenial(Denial{Dir: "in", Proto: "tcp", Dst: netip.AddrPortFrom(netip.MustParseAddr("100.96.0.2"), 1), Rule: "r"}, now) // dropped key: new event, drops one more
	st := ReportStats{Lost: r.lost, Queued: len(r.queue)}
	if st.Lost != 101 || st.Queued != reportQueue {
		t.Fatalf("stats %+v", st)
	}
	req := r.take()
	if req.Dropped != 101 || len(req.Events) != wire.MaxReportEvents || req.Events[0].Dst.Port() != 102 {
		t.Fatalf("first report: dropped %d, %d events, first port %d", req.Dropped, len(req.Events), req.Events[0].Dst.Port())
	}
	// A report that was not accepted goes back to the front with its count.
	r.putBack(req)
	again := r.take()
	if again.Dropped != 101 || again.Events[0].Dst.Port() != 102 {
		t.Fatalf("after putBack: dropped %d, first port %d", again.Dropped, again.Events[0].Dst.Port())
	}
	last := r.queue[len(r.queue)-1]
	if last.Dst.Port() != 1 || r.queue[len(r.queue)-2].Count != 2 {
		t.Errorf("queue tail %v / %v", last, r.queue[len(r.queue)-2])
	}
}
