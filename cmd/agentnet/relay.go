package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentnet/agentnet/internal/metricsserver"
	"github.com/agentnet/agentnet/relay"
)

func runRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("relay", "relay --listen ADDR --data DIR [--public-ip IP] [flags]",
		"Run a TURN/STUN relay (pion/turn) for nodes that cannot reach each other directly.\n"+
			"It serves TURN on UDP and TCP at --listen, TURN over TLS at --tls-listen, and STUN on\n"+
			"the UDP port and a second 'STUN alt' UDP port (the TLS port number, or --listen port+1).\n"+
			"On first start it makes DIR/relay.secret and a TLS key and self-signed certificate\n"+
			"(DIR/tls.key, DIR/tls.crt), and writes DIR/relay.cred (0600), which the coordinator reads:\n"+
			"agentnet coordinator ... --relay DIR/relay.cred. Restarts with the same --data keep the\n"+
			"secret and the TLS key, so the TLS pin in relay.cred stays valid; delete tls.key for a new pin.\n"+
			"Nodes authenticate with short-lived credentials the coordinator derives from the secret.", stderr)
	listen := fs.String("listen", "0.0.0.0:3478", "UDP and TCP listen address (same port)")
	tlsListen := fs.String("tls-listen", "", "TURN over TLS listen address, e.g. 0.0.0.0:5349 (default: off)")
	publicIP := fs.String("public-ip", "", "IPv4 address nodes reach the relay at; written to relay.cred and used for relayed addresses (default: the --listen IP; required when it is 0.0.0.0)")
	data := fs.String("data", "", "state directory (required), kept across restarts: relay.secret, relay.cred, tls.key, tls.crt (the TLS pin follows tls.key)")
	secretFile := fs.String("secret-file", "", "shared secret file, base64 (default DIR/relay.secret, generated on first start)")
	name := fs.String("name", "", "relay name in maps and logs (default: the host name)")
	var deny listFlag
	fs.Var(&deny, "deny", "peer prefix never relayed to, e.g. 198.51.100.0/24 (repeatable); wins over --allow")
	var allow listFlag
	fs.Var(&allow, "allow", "ONLY for labs and private deployments: peer prefix relayed to although refused by default, e.g. 10.0.0.0/8 (repeatable). By default private (RFC 1918, CGNAT, ULA), loopback, link-local, multicast, broadcast, reserved and documentation addresses, their IPv4-mapped and NAT64 forms, and the relay host's own addresses are refused")
	allowLoopback := fs.Bool("allow-loopback", false, "ONLY for single-machine demos and tests: relay to loopback peers (as --allow 127.0.0.0/8)")
	maxAllocs := fs.Int("max-allocations", relay.DefaultMaxAllocationsPerUser, "live allocations per node")
	bandwidth := fs.Int64("bandwidth", relay.DefaultBandwidthPerUser, "bytes/s relayed per node, both directions together; -1: unlimited")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9102 (default: off)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parseWithConfig(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: --data DIR is required", errUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	cfg := relay.Config{
		Name: *name, Listen: *listen, TLSListen: *tlsListen, DataDir: *data, SecretFile: *secretFile,
		AllowLoopback: *allowLoopback, MaxAllocationsPerUser: *maxAllocs, BandwidthPerUser: *bandwidth,
	}
	if *publicIP != "" {
		ip, err := netip.ParseAddr(*publicIP)
		if err != nil {
			return fmt.Errorf("%w: --public-ip %q is not an IP address", errUsage, *publicIP)
		}
		cfg.PublicIP = ip
	}
	for _, d := range deny {
		p, err := netip.ParsePrefix(d)
		if err != nil {
			return fmt.Errorf("%w: --deny %q is not a prefix such as 10.0.0.0/8", errUsage, d)
		}
		cfg.Deny = append(cfg.Deny, p.Masked())
	}
	for _, a := range allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("%w: --allow %q is not a prefix such as 10.0.0.0/8", errUsage, a)
		}
		cfg.Allow = append(cfg.Allow, p.Masked())
	}
	if *maxAllocs <= 0 {
		return fmt.Errorf("%w: --max-allocations must be at least 1", errUsage)
	}
	if *bandwidth == 0 {
		return fmt.Errorf("%w: --bandwidth must be positive, or -1 for unlimited", errUsage)
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	cfg.Logger = log
	s, err := relay.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	if *metricsListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(s.Collector())
		ms, err := metricsserver.Serve(*metricsListen, reg, log)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		defer ms.Close()
		log.Info("relay: metrics", "endpoint", ms.Addr())
	}
	fmt.Fprintf(stdout, "relay %s serving %v (STUN alt %v)\ncredential for the coordinator: %s\nnext: agentnet coordinator ... --relay %s\n",
		s.Cred().Name, s.Addrs(), s.STUNAlt(), s.CredPath(), s.CredPath())
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
