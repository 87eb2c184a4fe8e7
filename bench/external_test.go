package bench

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMeasureOnce measures plain loopback TCP through the exported API, as
// bench/tsnet measures its nodes.
func TestMeasureOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go Serve(ln)
	var d net.Dialer
	dial := func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", ln.Addr().String()) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ss, err := MeasureOnce(ctx, "x", dial, DataPlaneParams{Duration: 100 * time.Millisecond, RoundTrips: 20, Connects: 2})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Samples{}
	for _, s := range ss {
		got[s.Metric] = s
	}
	for _, m := range DataPlaneMetrics {
		s, ok := got[m]
		if !ok || s.Setup != "x" || s.Unit == "" || len(s.Values) != 1 || !(s.Values[0] > 0) {
			t.Errorf("%s: %+v (present %v)", m, s, ok)
		}
	}
	var buf bytes.Buffer
	if err := WriteSamples(&buf, ss); err != nil {
		t.Fatal(err)
	}
	back, err := ReadSamples(&buf)
	if err != nil || len(back) != len(ss) || back[0].Values[0] != ss[0].Values[0] {
		t.Errorf("ReadSamples(WriteSamples) = %+v, %v; want %+v", back, err, ss)
	}
}

// fakeTSNet is a bench/tsnet stand-in: a shell script that prints stdout
// (or fails with stderr).
func fakeTSNet(t *testing.T, stdout, stderr string, rc int) *tsnetProgram {
	t.Helper()
	dir := t.TempDir()
	for name, s := range map[string]string{"out": stdout, "err": stderr} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "tsnet-bench")
	script := "#!/bin/sh\ncat " + filepath.Join(dir, "out") + "\ncat " + filepath.Join(dir, "err") + " >&2\nexit " + strconv.Itoa(rc) + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return &tsnetProgram{dir: dir, bin: bin, progressf: t.Logf}
}

// TestTSNetMerge checks how one run of the tsnet program becomes samples of
// its setup, without tailscale.com: a fake program prints the JSON.
func TestTSNetMerge(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := dpParams{reps: 1, dur: time.Second, roundTrips: 10, connects: 2}
	ctx := context.Background()
	type sample struct {
		setup, metric string
		v             float64
	}
	collect := func(prog *tsnetProgram, name string) ([]sample, error) {
		var got []sample
		err := prog.setup(name).run(ctx, p, func(setup, metric string, v float64) { got = append(got, sample{setup, metric, v}) })
		return got, err
	}

	ok := `[{"setup":"tsnet","metric":"tcp_1stream_mbps","unit":"Mbit/s","samples":[2000.5]},{"setup":"tsnet","metric":"rtt_p50_us","unit":"us","samples":[80,90]}]`
	got, err := collect(fakeTSNet(t, ok, "", 0), SetupTSNet)
	want := []sample{{"tsnet", MetricTCP1, 2000.5}, {"tsnet", MetricRTTP50, 80}, {"tsnet", MetricRTTP50, 90}}
	if err != nil || len(got) != len(want) {
		t.Fatalf("merge: %v, %v; want %v", got, err, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("sample %d = %v, want %v", i, got[i], want[i])
		}
	}

	if _, err := collect(fakeTSNet(t, ok, "", 0), SetupTSNetDERP); err == nil || !strings.Contains(err.Error(), `"tsnet"`) {
		t.Errorf("samples of another setup: err = %v", err)
	}
	if _, err := collect(fakeTSNet(t, "[{}]", "", 0), SetupTSNet); err == nil {
		t.Error("an entry without setup: no error")
	}
	if _, err := collect(fakeTSNet(t, "", "tsnet: node a: up: boom\n", 1), SetupTSNet); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("failing program: err = %v, want its stderr", err)
	}
}

func TestBuildTSNetMissing(t *testing.T) {
	_, err := buildTSNet(context.Background(), Options{}, t.TempDir())
	if !errors.Is(err, ErrNoTSNetModule) {
		t.Errorf("buildTSNet(empty dir) = %v, want ErrNoTSNetModule", err)
	}
}
