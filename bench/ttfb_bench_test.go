package bench

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"
)

// BenchmarkTTFB starts b.N fresh nodes one after another against a running
// direct setup and reports the median and worst time to first byte (the
// ttfb_ms row of the data-plane run, many samples). With
// AGENTNET_TTFB_LOG=FILE every component logs there at debug level, with a
// line at each start and end, to trace a slow start.
func BenchmarkTTFB(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	logh := slog.DiscardHandler
	if p := os.Getenv("AGENTNET_TTFB_LOG"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() }) // after the nodes (cleanups run last-in first-out)
		logh = slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	an, direct := startBenchSetup(b, ctx, slog.New(logh), newAgentnetDirect)
	var ms []float64
	rep := 0
	for b.Loop() {
		an.log.Info("ttfb: start", "rep", rep)
		v, err := timeToFirstByte(ctx, an, direct, rep)
		an.log.Info("ttfb: done", "rep", rep, "ms", v)
		if err != nil {
			b.Fatal(err)
		}
		ms = append(ms, v)
		rep++
	}
	slices.Sort(ms)
	b.ReportMetric(percentile(ms, 0.5), "p50_ms")
	b.ReportMetric(ms[len(ms)-1], "max_ms")
	b.Logf("ttfb ms: %v", ms)
}
