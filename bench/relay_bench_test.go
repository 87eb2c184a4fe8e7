package bench

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkAgentnetRelay and BenchmarkAgentnetDirect move one TCP stream
// for 3 s per iteration between two in-process nodes, relayed and direct,
// for profiling the relay path (go test -bench AgentnetRelay -benchtime 1x
// -cpuprofile cpu.out ./bench). Compare Mbit/s only within one run.
func BenchmarkAgentnetRelay(b *testing.B) { benchSetup(b, newAgentnetRelay) }

func BenchmarkAgentnetDirect(b *testing.B) { benchSetup(b, newAgentnetDirect) }

func benchSetup(b *testing.B, newSetup func(context.Context, *agentnetNet) (*setup, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, s := startBenchSetup(b, ctx, slog.New(slog.DiscardHandler), newSetup)
	var sum float64
	for b.Loop() {
		mbps, _, _, err := throughput(ctx, s, 1, 3*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		sum += mbps
	}
	b.ReportMetric(sum/float64(b.N), "Mbit/s")
}

// startBenchSetup starts a coordinator and relay (agentnetNet) and the
// setup newSetup makes on it, serving the data-plane protocol and answering
// a first echo; both are closed when b ends.
func startBenchSetup(b *testing.B, ctx context.Context, log *slog.Logger, newSetup func(context.Context, *agentnetNet) (*setup, error)) (*agentnetNet, *setup) {
	an, err := newAgentnetNet(ctx, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(an.close)
	s, err := newSetup(ctx, an)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.close)
	go dpServe(s.ln)
	if err := echoOnce(ctx, s); err != nil {
		b.Fatal(err)
	}
	return an, s
}
