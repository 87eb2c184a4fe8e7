package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"
)

// This file is the surface for data-plane setups that live outside this
// module (bench/tsnet, its own Go module so that this one never depends on
// tailscale.com): such a program serves the bench protocol with Serve,
// measures one repetition with MeasureOnce and prints the samples as JSON
// (WriteSamples); DataPlane runs it once per repetition and merges what it
// printed (ReadSamples) as if the setup had run in this process.

// Samples are the raw samples of one (setup, metric) cell, before Summarize.
type Samples struct {
	Setup  string    `json:"setup"`
	Metric string    `json:"metric"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"samples"`
}

// DataPlaneParams are the sizes of one data-plane repetition.
type DataPlaneParams struct {
	Duration   time.Duration // length of each throughput run (1 and 4 streams)
	RoundTrips int           // 1-byte round trips of the RTT run (a tenth more warm up first)
	Connects   int           // connections of the connect-time run
}

// DataPlaneParamsFor returns the sizes DataPlane uses for o.
func DataPlaneParamsFor(o Options) DataPlaneParams {
	p := dpParamsFor(o)
	return DataPlaneParams{Duration: p.dur, RoundTrips: p.roundTrips, Connects: p.connects}
}

func (p DataPlaneParams) internal() dpParams {
	return dpParams{reps: 1, dur: p.Duration, roundTrips: p.RoundTrips, connects: p.Connects}
}

// Serve answers the measuring client (MeasureOnce) on every connection
// accepted from ln, until ln is closed; it returns then.
func Serve(ln net.Listener) { dpServe(ln) }

// MeasureOnce takes one sample of every DataPlaneMetric over the setup named
// name: dial must reach a server run by Serve, and must return connections
// that can half-close (CloseWrite). One echo first completes handshakes and
// is not counted. CPU per GiB is this process's CPU time (getrusage, both
// ends and everything else in the process) over the 1-stream run.
func MeasureOnce(ctx context.Context, name string, dial func(ctx context.Context) (net.Conn, error), p DataPlaneParams) ([]Samples, error) {
	s := &setup{name: name, dial: dial}
	if err := echoOnce(ctx, s); err != nil {
		return nil, fmt.Errorf("%s: first round trip: %w", name, err)
	}
	var out []Samples
	add := func(setup, metric string, v float64) {
		for i := range out {
			if out[i].Setup == setup && out[i].Metric == metric {
				out[i].Values = append(out[i].Values, v)
				return
			}
		}
		out = append(out, Samples{Setup: setup, Metric: metric, Unit: metricUnit(metric), Values: []float64{v}})
	}
	if err := measureSetup(ctx, s, p.internal(), add); err != nil {
		return out, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// WriteSamples writes ss as one JSON list.
func WriteSamples(w io.Writer, ss []Samples) error {
	if ss == nil {
		ss = []Samples{}
	}
	return json.NewEncoder(w).Encode(ss)
}

// ReadSamples parses what WriteSamples wrote. Every entry must name a setup
// and a metric.
func ReadSamples(r io.Reader) ([]Samples, error) {
	var ss []Samples
	if err := json.NewDecoder(r).Decode(&ss); err != nil {
		return nil, fmt.Errorf("samples: %w", err)
	}
	for _, s := range ss {
		if s.Setup == "" || s.Metric == "" {
			return nil, fmt.Errorf("samples: an entry without setup or metric: %+v", s)
		}
	}
	return ss, nil
}

// metricUnit is the unit of a data-plane metric ("" if unknown).
func metricUnit(metric string) string {
	switch metric {
	case MetricTCP1, MetricTCP4:
		return "Mbit/s"
	case MetricRTTP50, MetricRTTP99:
		return "us"
	case MetricConnect, MetricTTFB:
		return "ms"
	case MetricCPU:
		return "CPU-s/GiB"
	case MetricRSSIdle, MetricRSS100Peers, MetricRSS1000Peers:
		return "MiB"
	}
	return ""
}
