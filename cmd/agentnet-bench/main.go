// Command agentnet-bench measures agentnet side by side with its baselines
// (package bench), on 127.0.0.1 only. It is a separate program so that the
// product binary, cmd/agentnet, links no benchmark code; the rows that
// measure a process (node memory, the kernel-TUN nodes, the control plane's
// coordinator) run a built agentnet binary, never the go command.
//
//	go build -o bin/ ./cmd/agentnet ./cmd/agentnet-bench
//	bin/agentnet-bench --quick
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentnet/agentnet/bench"
	"github.com/agentnet/agentnet/netstack"
)

// Exit codes, as cmd/agentnet's.
const (
	exitOK      = 0
	exitFailure = 1 // the run failed
	exitUsage   = 2 // bad flags or arguments
)

// errUsage marks errors that exit with exitUsage.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := runBench(ctx, args, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "agentnet-bench: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "agentnet-bench: %v\n", err)
		return exitFailure
	}
}

// howToBuild says how to get an agentnet binary beside this one.
const howToBuild = "build both with `go build -o bin/ ./cmd/agentnet ./cmd/agentnet-bench` and run bin/agentnet-bench, " +
	"or pass --agentnet PATH (e.g. `go run ./cmd/agentnet-bench --agentnet bin/agentnet`)"

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agentnet-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: agentnet-bench [--quick] [--json] [--reps N] [--duration D] [--scales N,N] [--only dataplane|controlplane|dns|rss] [--setups S,S] [--tsnet] [--agentnet PATH]\n\n%s\n\nFlags:\n",
			"Measure agentnet side by side with its baselines, in this process on 127.0.0.1 only.\n"+
				"dataplane: TCP throughput (1 and 4 streams), 1-byte round-trip latency, connect time and\n"+
				"CPU per GiB over plain loopback TCP, bare wireguard-go (stock tun/netstack), two agentnet\n"+
				"nodes direct and through the relay, and (as root) two TUN-mode nodes in network namespaces\n"+
				"against the bare veth; agentnet's time to first byte of a new node; the memory of a node\n"+
				"process idle and with 100 and 1,000 peers. controlplane and dns: the coordinator and the\n"+
				"built-in resolver. rss: only the node-process memory rows of dataplane (about a minute).\n"+
				"--tsnet adds Tailscale's tsnet to dataplane (the separate bench/tsnet module).\n"+
				"The node processes, the TUN lab and the control plane's coordinator run the agentnet\n"+
				"binary given by --agentnet (default: agentnet beside this program); nothing is built.\n"+
				"Setups alternate in every repetition; results are medians with min and max.\n"+
				"Progress goes to stderr, the table (or JSON with --json) to stdout. A full run takes a few\n"+
				"minutes, --quick under a minute.")
		fs.PrintDefaults()
	}
	quick := fs.Bool("quick", false, "a fast smoke run: 1 repetition, 1 s per throughput run, no 1,000-peer memory run")
	asJSON := fs.Bool("json", false, "print a JSON list of {setup,metric,unit,median,min,max,n} instead of a table")
	reps := fs.Int("reps", 0, "repetitions of every measurement (default: 5, or 1 with --quick)")
	dur := fs.Duration("duration", 0, "length of each throughput run (default: 3s, or 1s with --quick)")
	scales := fs.String("scales", "", "control-plane node counts, comma-separated, e.g. 1000,5000 (default: 1000, or 200,500 with --quick; 5000 takes several minutes more)")
	only := fs.String("only", "", "run one area only: dataplane, controlplane, dns or rss (default: the first three; rss is part of dataplane)")
	setupList := fs.String("setups", "", "dataplane: measure only these setups, comma-separated, e.g. agentnet-direct,agentnet-relay\n"+
		"(of loopback, wg-raw, agentnet-direct, agentnet-relay, veth, agentnet-tun; default: all, with TTFB and memory)")
	tsnet := fs.Bool("tsnet", false, "also measure Tailscale's tsnet, direct and DERP only, in dataplane: builds this repository's bench/tsnet module (tailscale.com via the Go module proxy) and runs it once per setup and repetition")
	agentnet := fs.String("agentnet", "", "the agentnet binary run as the measured node and coordinator processes\n(default: $AGENTNET_BIN, else agentnet in this program's directory)")
	level := fs.String("log-level", "error", "log level of the components under test: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
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
	bin, err := findAgentnet(*agentnet, os.Getenv("AGENTNET_BIN"), executableDir())
	if err != nil {
		if errors.Is(err, errNoAgentnet) && !needsAgentnet(*only, setups) {
			bin, err = "", nil // controlplane runs its coordinator in-process and says so
		} else {
			return err
		}
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	start := time.Now()
	rs, runErr := bench.Run(ctx, bench.Options{Quick: *quick, Reps: *reps, Duration: *dur, Scales: scaleList, Setups: setups,
		Out: stderr, Logger: log, TSNet: tsnetDir, Agentnet: bin}, suites...)
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

// errNoAgentnet: no agentnet binary was given or found.
var errNoAgentnet = errors.New("no agentnet binary to measure")

// findAgentnet returns the agentnet binary to run: flag, else env, else
// agentnet in dir (this program's directory; "" when unknown). A binary
// that was asked for but is not there is an error naming it.
func findAgentnet(flagPath, envPath, dir string) (string, error) {
	for _, c := range []struct{ from, path string }{{"--agentnet", flagPath}, {"$AGENTNET_BIN", envPath}} {
		if c.path == "" {
			continue
		}
		p, err := exec.LookPath(c.path)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", c.from, c.path, err)
		}
		return filepath.Abs(p)
	}
	if dir != "" {
		p := filepath.Join(dir, "agentnet")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (the node memory rows and the TUN setups run one as a process): %s", errNoAgentnet, howToBuild)
}

// needsAgentnet reports whether the selected areas have rows that only an
// agentnet process can measure: the node memory rows (dataplane with every
// setup, or rss) and the kernel-TUN setups, which run as root.
func needsAgentnet(only string, setups []string) bool {
	switch only {
	case "rss":
		return true
	case "", "dataplane":
		tun := os.Geteuid() == 0 && (setups == nil || slices.Contains(setups, bench.SetupVeth) || slices.Contains(setups, bench.SetupAgentnetTUN))
		return setups == nil || tun
	}
	return false
}

// executableDir is the directory of this program, or "" (go run builds it
// into a temporary directory, where no agentnet is).
func executableDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe)
}

// newLogger makes the logger of the components under test; gVisor's own
// logs go to it too.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: use debug, info, warn or error", errUsage, level)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
	netstack.RouteGVisorLogs(log)
	return log, nil
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
