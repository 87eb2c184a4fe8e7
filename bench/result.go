// Package bench measures agentnet side by side with its baselines in one
// run: the data plane against plain loopback TCP and bare wireguard-go, and
// the control plane and DNS against their own references. Each area is a
// Suite; Run concatenates their Results, PrintTable and PrintJSON render them.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"time"
)

// Result is one measured (setup, metric) cell: the median of N samples and
// their range.
type Result struct {
	Setup  string  `json:"setup"`  // e.g. "loopback", "wg-raw", "agentnet-direct"
	Metric string  `json:"metric"` // e.g. "tcp_1stream_mbps", "rtt_p50_us"
	Unit   string  `json:"unit"`   // e.g. "Mbit/s", "us", "ms", "MiB"
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"` // samples behind Median/Min/Max; 0 means not measured
	// Note explains a skipped or qualified row ("needs root", ...). Optional.
	Note string `json:"note,omitempty"`
}

// Options are shared by all suites.
type Options struct {
	Quick    bool          // a fast smoke run: 1 rep, short durations, smaller scales
	Reps     int           // repetitions per measurement; 0 means the suite's default
	Duration time.Duration // per throughput repetition; 0 means the suite's default
	Scales   []int         // control-plane node counts; nil means the suite's default (1,000; Quick: 200 and 500)
	Setups   []string      // data-plane setups to measure (Setup* names); nil means all, with TTFB and memory
	Out      io.Writer     // progress lines (may be nil)
	Logger   *slog.Logger  // logs of the systems under test (may be nil: discarded)
	// TSNet is optional: the directory of the bench/tsnet module. If set,
	// DataPlane builds it and adds the tsnet and tsnet-derp setups (one run
	// of that program per setup and repetition). Default: off.
	TSNet string
	// Agentnet is optional: the path of the agentnet binary (cmd/agentnet)
	// run as its own process where a row measures a process: the node
	// whose memory RSS and DataPlane report, the kernel-TUN nodes and
	// coordinator of DataPlane's TUN setups, and ControlPlane's
	// coordinator. Empty: those memory and TUN rows fail with
	// ErrNoAgentnet, and ControlPlane runs the coordinator in-process
	// (its rss and cpu rows then include the simulated clients; their
	// note says so). Nothing is built at run time.
	Agentnet string
}

// Suite measures one area and returns its rows.
type Suite func(ctx context.Context, o Options) ([]Result, error)

// Summarize reduces samples to a Result (median, min, max, n).
func Summarize(setup, metric, unit string, samples []float64) Result {
	r := Result{Setup: setup, Metric: metric, Unit: unit, N: len(samples)}
	if len(samples) == 0 {
		return r
	}
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	r.Min, r.Max = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		r.Median = s[n/2]
	} else {
		r.Median = (s[n/2-1] + s[n/2]) / 2
	}
	return r
}

// Run runs the suites in order and concatenates their results. A suite that
// fails does not stop the others; the first error is returned along with
// every result gathered.
func Run(ctx context.Context, o Options, suites ...Suite) ([]Result, error) {
	o = o.withDefaults()
	var all []Result
	var first error
	for _, s := range suites {
		if err := ctx.Err(); err != nil {
			return all, err
		}
		rs, err := s(ctx, o)
		all = append(all, rs...)
		if err != nil && first == nil {
			first = err
		}
	}
	return all, first
}

// PrintJSON writes rs as a JSON list of
// {setup,metric,unit,median,min,max,n[,note]}.
func PrintJSON(w io.Writer, rs []Result) error {
	if rs == nil {
		rs = []Result{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rs)
}

func (o Options) withDefaults() Options {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// wants reports whether the data-plane setup name is to be measured.
func (o Options) wants(name string) bool {
	return o.Setups == nil || slices.Contains(o.Setups, name)
}

// Progressf writes one progress line to o.Out (if set).
func (o Options) Progressf(format string, args ...any) {
	if o.Out != nil {
		fmt.Fprintf(o.Out, format+"\n", args...)
	}
}
