package bench

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickDataPlane runs the data-plane suite at its smallest and checks
// that every expected row was measured. It asserts no speed: a slow machine
// must not fail it.
func TestQuickDataPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real nodes and a node process; skipped with -short")
	}
	bin := agentnetForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	var progress bytes.Buffer
	rs, err := Run(ctx, Options{Quick: true, Reps: 1, Duration: 200 * time.Millisecond, Out: &progress, Agentnet: bin}, DataPlane)
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	got := map[[2]string]Result{}
	for _, r := range rs {
		got[[2]string{r.Setup, r.Metric}] = r
	}
	var want [][2]string
	for _, s := range []string{SetupLoopback, SetupWGRaw, SetupAgentnetDirect} {
		for _, m := range DataPlaneMetrics {
			want = append(want, [2]string{s, m})
		}
	}
	for _, m := range []string{MetricTTFB, MetricRSSIdle, MetricRSS100Peers} {
		want = append(want, [2]string{SetupAgentnetDirect, m})
	}
	for _, k := range want {
		r, ok := got[k]
		if !ok {
			t.Errorf("no row %s %s", k[0], k[1])
			continue
		}
		if r.N < 1 || !(r.Median > 0) || r.Min > r.Median || r.Median > r.Max {
			t.Errorf("row %s %s: %+v", k[0], k[1], r)
		}
	}
	var table bytes.Buffer
	PrintTable(&table, rs)
	if !strings.Contains(table.String(), "x wg-raw") {
		t.Errorf("table has no ratio column:\n%s", table.String())
	}
	t.Logf("\n%s", table.String())
	var js bytes.Buffer
	if err := PrintJSON(&js, rs); err != nil || !strings.Contains(js.String(), `"metric": "tcp_1stream_mbps"`) {
		t.Errorf("PrintJSON: %v\n%s", err, js.String())
	}
}

// agentnetForTest builds cmd/agentnet for the tests that run a node
// process: a test has the go command; the benchmark binary does not build
// anything at run time.
func agentnetForTest(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agentnet")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/agentnet/agentnet/cmd/agentnet").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/agentnet: %v\n%s", err, out)
	}
	return bin
}

// TestNoAgentnetBinary: without Options.Agentnet the rows that run a node
// process fail at once with ErrNoAgentnet; nothing is built.
func TestNoAgentnetBinary(t *testing.T) {
	_, err := RSS(context.Background(), Options{Quick: true})
	if !errors.Is(err, ErrNoAgentnet) {
		t.Errorf("RSS without a binary: %v, want ErrNoAgentnet", err)
	}
	if bin, note := coordinatorBinary(Options{}); bin != "" || !strings.Contains(note, "in-process") {
		t.Errorf("coordinatorBinary without a binary = %q, %q; want in-process", bin, note)
	}
}

func TestSummarize(t *testing.T) {
	r := Summarize("s", "m", "u", []float64{3, 1, 2, 10})
	if r.Median != 2.5 || r.Min != 1 || r.Max != 10 || r.N != 4 {
		t.Errorf("Summarize = %+v", r)
	}
	if r := Summarize("s", "m", "u", nil); r.N != 0 || r.Median != 0 {
		t.Errorf("Summarize(nil) = %+v", r)
	}
}
