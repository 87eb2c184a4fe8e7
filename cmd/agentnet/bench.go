package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "bench [--quick] [--json] [--reps N] [--duration D] [--scales N,N] [--only dataplane|controlplane|dns|rss] [--setups S,S] [--tsnet]",
		"Measure agentnet side by side with its baselines, in this process on 127.0.0.1 only.\n"+
			"dataplane: TCP throughput (1 and 4 streams), 1-byte round-trip latency, connect time and\n"+
			"CPU per GiB over plain loopback TCP, bare wireguard-go (stock tun/netstack), two agentnet\n"+
			"nodes direct and through the relay, and (as root) two TUN-mode nodes in network namespaces\n"+
			"against the bare veth; agentnet's time to first byte of a new node; the memory of a node\n"+
			"process idle and with 100 and 1,000 peers. controlplane and dns: the coordinator and the\n"+
			"built-in resolver. rss: only the node-process memory rows of dataplane (about a minute).\n"+
			"--tsnet adds Tailscale's tsnet to dataplane (the separate bench/tsnet module).\n"+
			"Setups alternate in every repetition; results are medians with min and max.\n"+
			"Progress goes to stderr, the table (or JSON with --json) to stdout. A full run takes a few\n"+
			"minutes, --quick under a minute.", stderr)
	quick := fs.Bool("quick", false, "a fast smoke run: 1 repetition, 1 s per throughput run, no 1,000-peer memory run")
	asJSON := fs.Bool("json", false, "print a JSON list of {setup,metric,unit,median,min,max,n} instead of a table")
	reps := fs.Int("reps", 0, "repetitions of every measurement (default: 5, or 1 with --quick)")
	dur := fs.Duration("duration", 0, "length of each throughput run (default: 3s, or 1s with --quick)")
	scales := fs.String("scales", "", "control-plane node counts, comma-separated, e.g. 1000,5000 (default: 1000, or 200,500 with --quick; 5000 takes several minutes more)")
	only := fs.String("only", "", "run one area only: dataplane, controlplane, dns or rss (default: the first three; rss is part of dataplane)")
	setupList := fs.String("setups", "", "dataplane: measure only these setups, comma-separated, e.g. agentnet-direct,agentnet-relay\n"+
		"(of loopback, wg-raw, agentnet-direct, agentnet-relay, veth, agentnet-tun; default: all, with TTFB and memory)")
	tsnet := fs.Bool("tsnet", false, "also measure Tailscale's tsnet, direct and DERP only, in dataplane: builds this repository's bench/tsnet module (tailscale.com via the Go module proxy) and runs it once per setup and repetition")
	level := fs.String("log-level", "error", "log level of the components under test: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if *reps < 0 || *dur < 0 {
		return fmt.Errorf("%w: --reps and --duration must not be negative", errUsage)
	}
	all := []struct {
		name  string
		suite bench.Suite
	}{{"dataplane", bench.DataPlane}, {"controlplane", bench.ControlPlane}, {"dns", bench.DNS}, {"rss", bench.RSS}}
	var suites []bench.Suite
	for _, s := range all {
		if (*only == "" && s.name != "rss") || *only == s.name {
			suites = append(suites, s.suite)
		}
	}
	if len(suites) == 0 {
		return fmt.Errorf("%w: --only %q: use dataplane, controlplane, dns or rss", errUsage, *only)
	}
	var tsnetDir string
	if *tsnet {
		if *only != "" && *only != "dataplane" {
			return fmt.Errorf("%w: --tsnet measures the data plane: use it without --only or with --only dataplane", errUsage)
		}
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if tsnetDir, err = findTSNetModule(wd); err != nil {
			return err
		}
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	// The memory benchmark runs this very binary as a node process.
	if exe, err := os.Executable(); err == nil {
		bench.Binary = exe
	}
	start := time.Now()
	var scaleList []int
	for _, f := range strings.Split(*scales, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 2 || v > 100000 {
			return fmt.Errorf("%w: --scales: %q is not a node count (2..100000)", errUsage, f)
		}
		scaleList = append(scaleList, v)
	}
	var setups []string
	for _, f := range strings.Split(*setupList, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !slices.Contains(bench.DataPlaneSetups, f) {
			return fmt.Errorf("%w: --setups: %q is not a data-plane setup (%s)", errUsage, f, strings.Join(bench.DataPlaneSetups, ", "))
		}
		setups = append(setups, f)
	}
	rs, runErr := bench.Run(ctx, bench.Options{Quick: *quick, Reps: *reps, Duration: *dur, Scales: scaleList, Setups: setups, Out: stderr, Logger: log, TSNet: tsnetDir}, suites...)
	fmt.Fprintf(stderr, "bench: done in %v\n", time.Since(start).Round(time.Second))
	if *asJSON {
		if err := bench.PrintJSON(stdout, rs); err != nil {
			return err
		}
	} else {
		bench.PrintTable(stdout, rs)
	}
	return runErr
}

// findTSNetModule returns bench/tsnet of the agentnet repository that holds
// dir (dir itself or one of its parents).
func findTSNetModule(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		m := filepath.Join(d, "bench", "tsnet")
		if _, err := os.Stat(filepath.Join(m, "go.mod")); err == nil {
			return m, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("--tsnet: no bench/tsnet/go.mod in %s or its parents: run from the agentnet repository: %w", dir, bench.ErrNoTSNetModule)
		}
	}
}
