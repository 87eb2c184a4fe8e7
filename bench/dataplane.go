package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/agentnet/agentnet/overlay"
)

// Data-plane setups and metrics (the Setup and Metric of their Results).
const (
	SetupLoopback       = "loopback"        // kernel TCP over 127.0.0.1: the ceiling
	SetupWGRaw          = "wg-raw"          // bare wireguard-go + stock tun/netstack + stock bind: the peer baseline
	SetupAgentnetDirect = "agentnet-direct" // two agentnet nodes (netstack mode), direct UDP over 127.0.0.1
	SetupVeth           = "veth"            // kernel TCP between two network namespaces over a veth pair: the ceiling for agentnet-tun
	SetupAgentnetTUN    = "agentnet-tun"    // two agentnet node processes in kernel TUN mode, one per namespace, over that veth
	SetupAgentnetRelay  = "agentnet-relay"  // two agentnet nodes whose traffic all goes through our TURN relay (pion/turn), over 127.0.0.1
	SetupTSNet          = "tsnet"           // two Tailscale tsnet nodes, direct over 127.0.0.1 (bench/tsnet, Options.TSNet)
	SetupTSNetDERP      = "tsnet-derp"      // two tsnet nodes, every packet through a local DERP server (bench/tsnet)

	MetricTCP1         = "tcp_1stream_mbps"
	MetricTCP4         = "tcp_4stream_mbps"
	MetricRTTP50       = "rtt_p50_us"
	MetricRTTP99       = "rtt_p99_us"
	MetricConnect      = "connect_ms"
	MetricCPU          = "cpu_s_per_gib"
	MetricTTFB         = "ttfb_ms"
	MetricRSSIdle      = "rss_idle_mib"
	MetricRSS100Peers  = "rss_100peers_mib"
	MetricRSS1000Peers = "rss_1000peers_mib"
)

// DataPlaneSetups are the names Options.Setups picks from.
var DataPlaneSetups = []string{SetupLoopback, SetupWGRaw, SetupAgentnetDirect, SetupAgentnetRelay, SetupVeth, SetupAgentnetTUN}

// DataPlaneMetrics are measured for every in-process setup.
var DataPlaneMetrics = []string{MetricTCP1, MetricTCP4, MetricRTTP50, MetricRTTP99, MetricConnect, MetricCPU}

// dpParams are the sizes of one data-plane run.
type dpParams struct {
	reps       int
	dur        time.Duration
	roundTrips int
	connects   int
	rssPeers   []int // peer counts of the RSS runs besides idle
}

func dpParamsFor(o Options) dpParams {
	p := dpParams{reps: 5, dur: 3 * time.Second, roundTrips: 2000, connects: 20, rssPeers: []int{100, 1000}}
	if o.Quick {
		p = dpParams{reps: 1, dur: time.Second, roundTrips: 300, connects: 5, rssPeers: []int{100}}
	}
	if o.Reps > 0 {
		p.reps = o.Reps
	}
	if o.Duration > 0 {
		p.dur = o.Duration
	}
	return p
}

// DataPlane measures TCP between two endpoints in this process over
// loopback, bare wireguard-go and two agentnet nodes, alternating the setups
// in every repetition (with Options.TSNet also two tsnet nodes, direct and
// through DERP, one bench/tsnet process per repetition); then agentnet's
// time to first byte for a new node
// and the resident memory of a node process (the agentnet binary,
// Options.Agentnet) idle and with 100 and 1,000 peers in its map.
func DataPlane(ctx context.Context, o Options) ([]Result, error) {
	o = o.withDefaults()
	p := dpParamsFor(o)
	var rs []Result
	var errs []error
	fail := func(what string, err error) {
		o.Progressf("dataplane: %s: %v", what, err)
		errs = append(errs, fmt.Errorf("dataplane: %s: %w", what, err))
	}

	var setups []*setup
	defer func() {
		for _, s := range setups {
			s.close()
		}
	}()
	if o.wants(SetupLoopback) {
		if s, err := newLoopback(); err != nil {
			fail("loopback", err)
		} else {
			setups = append(setups, s)
		}
	}
	if o.wants(SetupWGRaw) {
		if s, err := newWGRaw(); err != nil {
			fail("wg-raw", err)
		} else {
			setups = append(setups, s)
		}
	}
	var an *agentnetNet
	if o.wants(SetupAgentnetDirect) || o.wants(SetupAgentnetRelay) {
		var err error
		if an, err = newAgentnetNet(ctx, o.Logger); err != nil {
			fail("agentnet", err)
		} else {
			defer an.close()
		}
	}
	if an != nil && o.wants(SetupAgentnetDirect) {
		if s, err := newAgentnetDirect(ctx, an); err != nil {
			fail("agentnet-direct", err)
		} else {
			setups = append(setups, s)
		}
	}
	if an != nil && o.wants(SetupAgentnetRelay) {
		if s, err := newAgentnetRelay(ctx, an); err != nil {
			fail("agentnet-relay", err)
		} else {
			setups = append(setups, s)
		}
	}
	var tsnetNote string
	if o.TSNet != "" {
		o.Progressf("dataplane: building bench/tsnet in %s", o.TSNet)
		if t, err := buildTSNet(ctx, o, o.TSNet); err != nil {
			tsnetNote = "not measured: " + err.Error()
			fail("tsnet", err)
		} else {
			defer t.close()
			setups = append(setups, t.setup(SetupTSNet), t.setup(SetupTSNetDERP))
		}
	}
	for _, s := range setups {
		if s.ln != nil {
			go dpServe(s.ln)
		}
	}
	var tunNote string
	var tunLab *tunLab
	if !o.wants(SetupVeth) && !o.wants(SetupAgentnetTUN) {
		tunNote = "not measured: not in --setups"
	} else if ts, err := startTUNSetups(ctx, o); err != nil {
		tunNote = "not measured: " + err.Error()
		if !errors.Is(err, errNeedsRoot) {
			fail("agentnet-tun", err)
		}
	} else {
		tunLab = ts.lab
		defer tunLab.close() // idempotent; normally closed below
		for _, s := range ts.setups {
			if o.wants(s.name) {
				setups = append(setups, s) // they serve themselves
			} else {
				s.close()
			}
		}
	}
	ready := setups[:0:0]
	for _, s := range setups {
		if s.run != nil { // checks its path itself
			ready = append(ready, s)
			continue
		}
		if err := echoOnce(ctx, s); err != nil {
			fail(s.name+": first round trip", err)
			s.close()
			continue
		}
		ready = append(ready, s)
	}
	setups = ready

	samples := map[string]map[string][]float64{} // setup → metric → samples
	add := func(setup, metric string, v float64) {
		if samples[setup] == nil {
			samples[setup] = map[string][]float64{}
		}
		samples[setup][metric] = append(samples[setup][metric], v)
	}
	broken := map[string]bool{}
	for rep := range p.reps {
		order := append([]*setup(nil), setups...)
		if rep%2 == 1 { // alternate A/B/C, C/B/A so no setup always runs first
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for _, s := range order {
			if err := ctx.Err(); err != nil {
				return rs, err
			}
			if broken[s.name] {
				continue
			}
			if err := measureSetup(ctx, s, p, add); err != nil {
				fail(s.name, err)
				broken[s.name] = true
				continue
			}
			m := samples[s.name]
			o.Progressf("dataplane rep %d/%d %-16s 1 stream %7.0f Mbit/s  4 streams %7.0f Mbit/s  rtt p50 %6.0f us  connect %.2f ms",
				rep+1, p.reps, s.name, last(m[MetricTCP1]), last(m[MetricTCP4]), last(m[MetricRTTP50]), last(m[MetricConnect]))
		}
	}
	for _, s := range setups {
		for _, metric := range DataPlaneMetrics {
			if v := samples[s.name][metric]; len(v) > 0 {
				rs = append(rs, Summarize(s.name, metric, metricUnit(metric), v))
			}
		}
	}

	if direct := findSetup(setups, SetupAgentnetDirect); an != nil && direct != nil && o.Setups == nil {
		var ttfb []float64
		for rep := range p.reps {
			ms, err := timeToFirstByte(ctx, an, direct, rep)
			if err != nil {
				fail("ttfb", err)
				break
			}
			o.Progressf("dataplane rep %d/%d agentnet ttfb %.1f ms (overlay.New of a fresh node → first byte from a running peer)", rep+1, p.reps, ms)
			ttfb = append(ttfb, ms)
		}
		if len(ttfb) > 0 {
			rs = append(rs, Summarize(SetupAgentnetDirect, MetricTTFB, "ms", ttfb))
		}
	}
	// Free the in-process nodes before measuring a node process's memory.
	for _, s := range setups {
		s.close()
	}
	setups = nil
	if tunLab != nil {
		tunLab.close()
	}

	if o.Setups == nil {
		rss, err := measureRSS(ctx, o, p)
		rs = append(rs, rss...)
		if err != nil {
			fail("rss", err)
		}
	}

	if tunNote != "" && o.wants(SetupAgentnetTUN) {
		rs = append(rs, Result{Setup: SetupAgentnetTUN, Metric: MetricTCP1, Unit: "Mbit/s", Note: tunNote})
	}
	if tsnetNote != "" {
		rs = append(rs, Result{Setup: SetupTSNet, Metric: MetricTCP1, Unit: "Mbit/s", Note: tsnetNote})
	}

	return rs, errors.Join(errs...)
}

func findSetup(setups []*setup, name string) *setup {
	for _, s := range setups {
		if s.name == name {
			return s
		}
	}
	return nil
}

// tunSetups are the veth and agentnet-tun setups and the lab they share.
type tunSetups struct {
	lab    *tunLab
	setups []*setup
}

// startTUNSetups builds the namespaces, processes and both setups.
func startTUNSetups(ctx context.Context, o Options) (*tunSetups, error) {
	if err := tunSupported(); err != nil {
		return nil, err
	}
	bin, err := o.agentnetBinary()
	if err != nil {
		return nil, err
	}
	lab, err := newTUNLab(ctx, o, bin)
	if err != nil {
		return nil, err
	}
	ts := &tunSetups{lab: lab}
	veth, err := lab.setup(ctx, SetupVeth, netip.MustParseAddr("198.18.77.2"))
	if err != nil {
		lab.close()
		return nil, err
	}
	tun, err := lab.setup(ctx, SetupAgentnetTUN, lab.ipB)
	if err != nil {
		veth.close()
		lab.close()
		return nil, err
	}
	ts.setups = []*setup{veth, tun}
	return ts, nil
}

func last(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return v[len(v)-1]
}

// measureSetup takes one sample of every DataPlaneMetric over s.
func measureSetup(ctx context.Context, s *setup, p dpParams, add func(setup, metric string, v float64)) error {
	if s.run != nil {
		return s.run(ctx, p, add)
	}
	mbps, bytes, cpu, err := throughput(ctx, s, 1, p.dur)
	if err != nil {
		return fmt.Errorf("1 stream: %w", err)
	}
	add(s.name, MetricTCP1, mbps)
	add(s.name, MetricCPU, cpu/(float64(bytes)/(1<<30)))
	if mbps, _, _, err = throughput(ctx, s, 4, p.dur); err != nil {
		return fmt.Errorf("4 streams: %w", err)
	}
	add(s.name, MetricTCP4, mbps)
	p50, p99, err := rtt(ctx, s, p.roundTrips)
	if err != nil {
		return fmt.Errorf("rtt: %w", err)
	}
	add(s.name, MetricRTTP50, p50)
	add(s.name, MetricRTTP99, p99)
	ms, err := connectTime(ctx, s, p.connects)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	add(s.name, MetricConnect, ms)
	return nil
}

// timeToFirstByte starts a fresh node and returns the milliseconds from
// overlay.New to the first byte echoed back by the already running peer of
// direct: enrollment, map, WireGuard handshake and TCP connect.
func timeToFirstByte(ctx context.Context, an *agentnetNet, direct *setup, rep int) (float64, error) {
	name := fmt.Sprintf("ttfb%d", rep)
	cfg := an.nodeConfig(name)
	target := direct.target
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t0 := time.Now()
	nd, err := overlay.New(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer func() {
		nd.Close()
		_ = an.admin.DeleteNode(context.WithoutCancel(ctx), name)
	}()
	for {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := nd.Dial(dctx, "tcp", target)
		dcancel()
		if err == nil {
			err = echoConn(c)
			c.Close()
			if err == nil {
				return float64(time.Since(t0).Nanoseconds()) / 1e6, nil
			}
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("no byte from the peer within 30s: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
