// Command tsnet measures Tailscale's tsnet with the data-plane measurements
// of agentnet's bench package, for `agentnet bench --tsnet`: in this one
// process, on 127.0.0.1 only, Tailscale's test control server, a DERP
// server, a STUN responder and two ephemeral tsnet nodes; one repetition of
// TCP throughput (1 and 4 streams), 1-byte round trips, connect time and
// CPU per GiB between the two nodes; the samples as JSON on stdout.
//
// This is its own Go module so that agentnet's module never depends on
// tailscale.com.
//
// Setups: tsnet (the nodes go direct over 127.0.0.1 UDP) and tsnet-derp
// (every packet through the local DERP server, TS_DEBUG_ALWAYS_USE_DERP).
//
// Nothing leaves loopback: the DERP map holds only the local region, log
// uploads are off (TS_NO_LOGS_NO_SUPPORT, logtail.Disable), the nodes
// advertise no interface addresses (TS_DEBUG_OMIT_LOCAL_ADDRS), only what
// the local STUN responder saw (127.0.0.1:port), and this process resolves
// no names. Two features must be compiled out, so build (or run) with
//
//	go build -tags ts_omit_captiveportal,ts_omit_portmapper .
//
// netcheck's captive-portal probe would fetch
// http://controlplane.tailscale.com/generate_204 whenever a report takes
// over 200 ms (it does with DERP only), and the port mapper would talk
// UPnP, NAT-PMP and PCP to the gateway. Without the tags the program
// refuses to start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"time"

	"tailscale.com/envknob"
	"tailscale.com/feature/buildfeatures"
	"tailscale.com/logtail"
	"tailscale.com/net/netns"
	"tailscale.com/types/logger"

	"github.com/agentnet/agentnet/bench"
)

// Setup names, as in agentnet bench's table.
const (
	setupDirect = "tsnet"
	setupDERP   = "tsnet-derp"
)

func main() {
	setup := flag.String("setup", setupDirect, "tsnet (direct UDP over 127.0.0.1) or tsnet-derp (all through the local DERP server)")
	dur := flag.Duration("duration", 3*time.Second, "length of each throughput run")
	roundTrips := flag.Int("round-trips", 2000, "1-byte round trips of the RTT run")
	connects := flag.Int("connects", 20, "connections of the connect-time run")
	verbose := flag.Bool("v", false, "Tailscale's logs to stderr")
	flag.Parse()
	if *setup != setupDirect && *setup != setupDERP {
		fmt.Fprintf(os.Stderr, "tsnet: -setup %q: use %s or %s\n", *setup, setupDirect, setupDERP)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logf := logger.Discard
	if *verbose {
		logf = log.New(os.Stderr, "", log.Lmicroseconds).Printf
	}
	p := bench.DataPlaneParams{Duration: *dur, RoundTrips: *roundTrips, Connects: *connects}
	if err := run(ctx, *setup, p, logf, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "tsnet: %v\n", err)
		os.Exit(1)
	}
}

// Tags is what the program must be built with (see the package doc).
const Tags = "ts_omit_captiveportal,ts_omit_portmapper"

// errNoDNS is every name lookup's error: the lab needs none.
var errNoDNS = errors.New("tsnet bench: no DNS (loopback only)")

// loopbackOnly sets the process-wide knobs that keep Tailscale off the
// network beyond loopback (see the package doc).
func loopbackOnly(derpOnly bool) error {
	if buildfeatures.HasCaptivePortal || buildfeatures.HasPortMapper {
		return fmt.Errorf("built without -tags %s: captive-portal detection or the port mapper would send beyond loopback", Tags)
	}
	envknob.Setenv("TS_NO_LOGS_NO_SUPPORT", "true")
	envknob.Setenv("TS_DISABLE_PORTMAPPER", "true")
	envknob.Setenv("TS_DEBUG_OMIT_LOCAL_ADDRS", "true")
	if derpOnly {
		envknob.Setenv("TS_DEBUG_ALWAYS_USE_DERP", "true")
	}
	logtail.Disable()
	// No SO_MARK or interface binding: the peers are on 127.0.0.1.
	netns.SetEnabled(false)
	// Any name lookup fails here, before a query is sent.
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errNoDNS
	}}
	return nil
}

// run builds the lab and the two nodes, measures one repetition of setup
// and writes its samples to out.
func run(ctx context.Context, setup string, p bench.DataPlaneParams, logf logger.Logf, out io.Writer) error {
	if err := loopbackOnly(setup == setupDERP); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "agentnet-bench-tsnet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := startLab(logf)
	if err != nil {
		return err
	}
	defer l.close()
	pair, err := startPair(ctx, l.controlURL, dir, logf)
	if err != nil {
		return err
	}
	defer pair.close()
	if err := pair.waitPath(ctx, setup == setupDERP); err != nil {
		return err
	}
	ss, err := bench.MeasureOnce(ctx, setup, pair.dial, p)
	if err != nil {
		return err
	}
	// The path must not have changed during the measurement.
	if err := pair.checkPath(ctx, setup == setupDERP); err != nil {
		return errors.Join(errors.New("after measuring"), err)
	}
	return bench.WriteSamples(out, ss)
}
