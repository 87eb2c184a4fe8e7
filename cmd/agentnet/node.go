package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/agentnet/agentnet/netstack/proxy"
	"github.com/agentnet/agentnet/overlay"
)

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if verb, ok := nodeVerb(args); ok {
		return verb(ctx, args[1:], stdout, stderr)
	}
	fs := newFlags("node", "node --state DIR [--token T --name NAME] [flags]",
		"Run a node. On first start it joins with --token and --name; afterwards --state is enough and\n"+
			"the node starts from its cached signed network map even while the coordinator is down.\n"+
			"Agents in this process's overlay are reachable as NAME.agents.internal."+nodeVerbsHelp, stderr)
	state := fs.String("state", "", "state directory: keys, cached network map, local API socket (required)")
	token := fs.String("token", "", "join token (first start only; also read from $AGENTNET_TOKEN)")
	name := fs.String("name", "", "agent name to enrol as (first start only; default: host name)")
	listen := fs.String("listen", "0.0.0.0:0", "UDP address of the node's WireGuard socket; a specific IP is the only one advertised")
	dnsListen := fs.String("dns-listen", "", "also answer DNS for agent names on this host address, e.g. 127.0.0.1:5301")
	dnsUpstream := fs.String("dns-upstream", "", "forward names outside the overlay domain to this DNS server ip:port (default: with --accept-dns the host's previous resolver, else refuse them)")
	mtu := fs.Int("mtu", 1280, "overlay MTU")
	tunName := fs.String("tun", "", "kernel TUN mode: create this device (e.g. agentnet0), needs CAP_NET_ADMIN; default: netstack mode, no root")
	acceptDNS := fs.Bool("accept-dns", false, "kernel TUN mode: point /etc/resolv.conf at the built-in DNS while the node runs (restored on exit); other names go to --dns-upstream or the resolver it named before")
	socks5 := fs.String("socks5", "", "serve SOCKS5 (CONNECT by name, UDP ASSOCIATE) on this address, e.g. 127.0.0.1:1080")
	allowOutside := fs.Bool("socks5-allow-outside", false, "let the SOCKS5 and HTTP proxies reach destinations outside the overlay")
	httpProxy := fs.String("http-proxy", "", "serve an HTTP proxy (CONNECT and plain) on this address, e.g. 127.0.0.1:8080")
	var forwards, exposes listFlag
	fs.Var(&forwards, "forward", "LOCAL=PEER:PORT, e.g. 127.0.0.1:9000=search:8080: a local listener whose connections go to a peer (repeatable)")
	fs.Var(&exposes, "expose", "PORT or PORT=LOCAL, e.g. 8080 or 80=127.0.0.1:8080: overlay TCP port forwarded to a local service (repeatable)")
	keyRotation := fs.Duration("key-rotation", overlay.DefaultKeyRotation, "replace the WireGuard key this often (0: never); 'agentnet node rotate' rotates now")
	forceRelay := fs.Bool("force-relay", false, "never use direct paths: send everything through the relay (debugging, measuring the relay)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9100 (default: off)")
	maxConnsPerPeer := fs.Int("max-conns-per-peer", proxy.DefaultMaxConnsPerSource, "inbound TCP connections one source address (a peer's overlay IP; a front-end's client) may hold open at once; more are reset and counted in agentnet_conn_refused_total")
	maxConns := fs.Int("max-conns", proxy.DefaultMaxConns, "inbound TCP connections open at once in total, in netstack mode and in each front-end; more are reset and counted")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parseWithConfig(fs, args); err != nil {
		return err
	}
	if *state == "" {
		return fmt.Errorf("%w: --state DIR is required", errUsage)
	}
	ap, err := netip.ParseAddrPort(*listen)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: want ip:port, e.g. 127.0.0.1:0", errUsage, *listen)
	}
	if *token == "" {
		*token = strings.TrimSpace(os.Getenv("AGENTNET_TOKEN"))
	}
	if *name == "" {
		h, _ := os.Hostname()
		*name = strings.ToLower(strings.Split(h, ".")[0])
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	if *maxConnsPerPeer <= 0 || *maxConns <= 0 {
		return fmt.Errorf("%w: --max-conns-per-peer %d, --max-conns %d: want positive numbers", errUsage, *maxConnsPerPeer, *maxConns)
	}
	if *keyRotation < 0 {
		return fmt.Errorf("%w: --key-rotation %v is negative; use 0 to disable", errUsage, *keyRotation)
	}
	if *keyRotation == 0 {
		*keyRotation = -1 // overlay.Config: negative disables
	}
	cfg := overlay.Config{
		KeyRotation: *keyRotation,
		StateDir:    *state, Token: *token, Name: *name, ListenAddr: ap,
		DNSListen: *dnsListen, DNSUpstream: *dnsUpstream, MTU: *mtu, Logger: log,
		TUN: *tunName, AcceptDNS: *acceptDNS, MetricsListen: *metricsListen, ForceRelay: *forceRelay,
		MaxConnsPerPeer: *maxConnsPerPeer, MaxConns: *maxConns,
		Frontends: overlay.Frontends{SOCKS5: *socks5, SOCKS5AllowOutside: *allowOutside, HTTPProxy: *httpProxy,
			Forwards: forwards, Exposes: exposes},
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	n, err := overlay.New(ctx, cfg)
	if err != nil {
		return err
	}
	self := n.Self()
	fmt.Fprintf(stdout, "node %s up: %s %s %s\n", self.Name, self.IPv4, self.IPv6, self.DID)
	if ap := n.DNSAddr(); ap.IsValid() {
		fmt.Fprintf(stdout, "dns on %s\n", ap)
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return n.Close()
	case <-n.Done():
		// The coordinator revoked or expired this node: it has stopped
		// sending; Close removes its TUN device and sockets, and the
		// process exits non-zero with the reason.
		stopErr := n.Err()
		n.Close()
		if stopErr == nil {
			stopErr = errors.New("node stopped")
		}
		return stopErr
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
