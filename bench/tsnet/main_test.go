package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"tailscale.com/feature/buildfeatures"
	"tailscale.com/types/logger"

	"github.com/agentnet/agentnet/bench"
)

// TestRun measures one short repetition between two direct tsnet nodes
// and checks that every data-plane metric has a positive sample. Run with
// go test -tags ts_omit_captiveportal,ts_omit_portmapper .
func TestRun(t *testing.T) {
	if buildfeatures.HasCaptivePortal || buildfeatures.HasPortMapper {
		t.Skip("needs -tags " + Tags)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	p := bench.DataPlaneParams{Duration: 200 * time.Millisecond, RoundTrips: 50, Connects: 3}
	if err := run(ctx, setupDirect, p, logger.Discard, &out); err != nil {
		t.Fatal(err)
	}
	ss, err := bench.ReadSamples(&out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range ss {
		if s.Setup != setupDirect || len(s.Values) != 1 || !(s.Values[0] > 0) {
			t.Errorf("samples %+v", s)
		}
		got[s.Metric] = true
	}
	for _, m := range bench.DataPlaneMetrics {
		if !got[m] {
			t.Errorf("no %s samples", m)
		}
	}
}
