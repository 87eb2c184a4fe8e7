package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/relay"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "demo [--keep DIR] [--log-level LEVEL]",
		"Start, in this process on 127.0.0.1 only, a coordinator and three agent nodes (planner, search,\n"+
			"writer) on gVisor netstacks. planner and writer resolve search.agents.internal through the\n"+
			"built-in DNS and make plain HTTP requests to it through WireGuard. Prints what happened and\n"+
			"exits 0, or non-zero with the step that failed.", stderr)
	keep := fs.String("keep", "", "keep state in this directory instead of a temporary one")
	level := fs.String("log-level", "warn", "log level of the components: debug, info, warn, error")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	dir := *keep
	if dir == "" {
		if dir, err = os.MkdirTemp("", "agentnet-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return demo(ctx, dir, log, stdout)
}

// demoAgent is one node of the demo and its label.
type demoAgent struct {
	name string
	node *overlay.Node
}

func demo(ctx context.Context, dir string, log *slog.Logger, out io.Writer) (err error) {
	step := func(format string, a ...any) { fmt.Fprintf(out, "• "+format+"\n", a...) }
	t0 := time.Now()

	// The relay: on loopback, so it must be allowed to relay to loopback
	// peers (a real relay never is; see agentnet relay --help).
	rel, err := relay.New(ctx, relay.Config{Name: "demo-relay", Listen: "127.0.0.1:0", TLSListen: "127.0.0.1:0",
		DataDir: filepath.Join(dir, "relay"), AllowLoopback: true, Logger: log})
	if err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	defer rel.Close()
	step("relay %s at %s (TURN/STUN over udp and tcp, tls on %s)", rel.Cred().Name, rel.Cred().Addrs[0].Addr, rel.Cred().Addrs[len(rel.Cred().Addrs)-1].Addr)

	coord, err := coordinator.New(coordinator.Config{DataDir: filepath.Join(dir, "coord"), Listen: "127.0.0.1:0", Logger: log,
		Relays: []turncred.Cred{rel.Cred()}})
	if err != nil {
		return fmt.Errorf("start coordinator: %w", err)
	}
	defer coord.Close()
	step("coordinator at %s (certificate pin %s…)", coord.URL(), coord.Pin()[:19])

	tok, err := adminclient.New(coord.AdminCred()).CreateToken(ctx, wire.CreateTokenRequest{Tags: []string{"tag:demo"}, Reusable: true, TTLSeconds: 600})
	if err != nil {
		return fmt.Errorf("create join token: %w", err)
	}
	step("join token created (reusable, tag:demo, expires %s)", tok.Expires.Format(time.TimeOnly))

	var agents []demoAgent
	defer func() {
		for _, a := range agents {
			a.node.Close()
		}
	}()
	for _, name := range []string{"planner", "search", "writer"} {
		start := time.Now()
		n, err := overlay.New(ctx, overlay.Config{
			StateDir: filepath.Join(dir, name), Token: tok.Token, Name: name,
			ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), Logger: log.With("agent", name),
		})
		if err != nil {
			return fmt.Errorf("start node %s: %w", name, err)
		}
		agents = append(agents, demoAgent{name, n})
		step("node %-8s joined in %v", name, time.Since(start).Round(time.Millisecond))
	}
	planner, search, writer := agents[0].node, agents[1].node, agents[2].node

	// search serves plain HTTP on its virtual IP, port 80.
	ln, err := search.Listen("tcp", ":80")
	if err != nil {
		return fmt.Errorf("search: listen on overlay :80: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("q")
		fmt.Fprintf(w, "search results for %q, served by search (%s) to %s\n", q, search.Self().IPv4, r.RemoteAddr)
		w.Write([]byte(strings.Repeat("result line\n", 4096)))
	})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	defer func() { srv.Close(); wg.Wait() }()

	if err := waitPeers(ctx, agents); err != nil {
		return err
	}

	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tIPV4\tIPV6\tDID")
	for _, a := range agents {
		s := a.node.Self()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.IPv4, s.IPv6, s.DID)
	}
	tw.Flush()
	fmt.Fprintln(out)

	for _, client := range []demoAgent{{"planner", planner}, {"writer", writer}} {
		if err := demoRequest(ctx, client, search, out); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "\ndemo ok: 3 agents talked by name over WireGuard in %v\n", time.Since(t0).Round(time.Millisecond))
	return nil
}

// waitPeers waits until every agent's map lists the two others.
func waitPeers(ctx context.Context, agents []demoAgent) error {
	for {
		ready := true
		for _, a := range agents {
			if len(a.node.Map().Peers) < len(agents)-1 {
				ready = false
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("nodes did not learn each other from the coordinator in time")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// demoRequest resolves search through the built-in DNS (a real query over
// the overlay to 100.100.100.100) and fetches a page from it over HTTP.
func demoRequest(ctx context.Context, from demoAgent, search *overlay.Node, out io.Writer) error {
	const host = "search." + wire.DefaultDomain
	t0 := time.Now()
	ips, err := from.node.Resolver().LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return fmt.Errorf("%s: resolve %s via built-in DNS: %w", from.name, host, err)
	}
	dnsTime := time.Since(t0)
	if len(ips) != 1 || ips[0] != search.Self().IPv4 {
		return fmt.Errorf("%s: DNS answered %v for %s, want %s", from.name, ips, host, search.Self().IPv4)
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return from.node.Dial(ctx, "tcp4", net.JoinHostPort(ips[0].String(), port))
		},
		DisableKeepAlives: true,
	}}
	t1 := time.Now()
	resp, err := client.Get("http://" + host + "/search?q=agent+overlays")
	if err != nil {
		return fmt.Errorf("%s: GET http://%s/: %w", from.name, host, err)
	}
	h := sha256.New()
	nbytes, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: GET http://%s/: status %d, %v", from.name, host, resp.StatusCode, err)
	}
	httpTime := time.Since(t1)
	path := "?"
	for _, p := range from.node.Status().Peers {
		if p.Name == "search" {
			path = p.Path.String()
		}
	}
	fmt.Fprintf(out, "%s → %s: DNS %s A %s in %v; HTTP 200, %d bytes (sha256 %s…) in %v; path %s\n",
		from.name, "search", host, ips[0], dnsTime.Round(time.Microsecond), nbytes,
		hex.EncodeToString(h.Sum(nil))[:12], httpTime.Round(time.Microsecond), path)
	return nil
}
