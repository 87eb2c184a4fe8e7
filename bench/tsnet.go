package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// tsnetTags compile out what would send beyond loopback; they must match
// Tags in bench/tsnet (which refuses to run without them).
const tsnetTags = "ts_omit_captiveportal,ts_omit_portmapper"

// ErrNoTSNetModule is returned (wrapped) when Options.TSNet is not the
// bench/tsnet module.
var ErrNoTSNetModule = errors.New("not the bench/tsnet module")

// tsnetProgram is the built bench/tsnet program and the temp dir it sits in.
type tsnetProgram struct {
	dir, bin  string
	progressf func(format string, args ...any) // Options.Progressf
}

// buildTSNet builds the bench/tsnet module in dir once (go build, so one
// compile and link per bench run, then one process per setup and
// repetition). The first build downloads tailscale.com through the module
// proxy and compiles it: a minute or two.
func buildTSNet(ctx context.Context, o Options, dir string) (*tsnetProgram, error) {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return nil, fmt.Errorf("tsnet: %s: %w (run from the agentnet repository, or pass its bench/tsnet directory)", dir, ErrNoTSNetModule)
	}
	tmp, err := os.MkdirTemp("", "agentnet-bench-tsnet-bin-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(tmp, "tsnet-bench")
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", tsnetTags, "-o", bin, ".")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("tsnet: go build in %s (needs the Go module proxy the first time): %v: %s", dir, err, bytes.TrimSpace(b))
	}
	return &tsnetProgram{dir: tmp, bin: bin, progressf: o.Progressf}, nil
}

func (t *tsnetProgram) close() { os.RemoveAll(t.dir) }

// setup is the named setup of the program (SetupTSNet or SetupTSNetDERP):
// every repetition runs the program once, which starts its own control
// server, DERP server and two nodes, measures, and prints the samples. A
// run that fails is reported and run once more with a fresh process (a
// connection reset in tsnet's 4-stream run was seen once in ten runs).
func (t *tsnetProgram) setup(name string) *setup {
	return &setup{
		name:  name,
		close: func() {},
		run: func(ctx context.Context, p dpParams, add func(setup, metric string, v float64)) error {
			err := t.runOnce(ctx, name, p, add)
			if err != nil && ctx.Err() == nil {
				t.progressf("dataplane: %s: %v; once more with a fresh process", name, err)
				err = t.runOnce(ctx, name, p, add)
			}
			return err
		},
	}
}

func (t *tsnetProgram) runOnce(ctx context.Context, name string, p dpParams, add func(setup, metric string, v float64)) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+4*p.dur)
	defer cancel()
	cmd := exec.CommandContext(ctx, t.bin, "-setup", name, "-duration", p.dur.String(),
		"-round-trips", strconv.Itoa(p.roundTrips), "-connects", strconv.Itoa(p.connects))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, lastLines(stderr.String(), 5))
	}
	ss, err := ReadSamples(&stdout)
	if err != nil {
		return err
	}
	for _, s := range ss {
		if s.Setup != name {
			return fmt.Errorf("samples of setup %q, want %q", s.Setup, name)
		}
		for _, v := range s.Values {
			add(s.Setup, s.Metric, v)
		}
	}
	return nil
}
