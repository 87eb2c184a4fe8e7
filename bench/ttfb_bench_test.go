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
// ttfb_ms row of the data-plane run, many samples).
func BenchmarkTTFB(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	logh := slog.DiscardHandler
	if p := os.Getenv("AGENTNET_TTFB_LOG"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		logh = slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	an, err := newAgentnetNet(ctx, slog.New(logh))
	if err != nil {
		b.Fatal(err)
	}
	defer an.close()
	direct, err := newAgentnetDirect(ctx, an)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.close()
	go dpServe(direct.ln)
	if err := echoOnce(ctx, direct); err != nil {
		b.Fatal(err)
	}
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
