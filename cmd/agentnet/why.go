package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/wire"
)

func runWhy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("why", "why FROM TO[:PORT] [--proto tcp|udp|icmp] --admin ADMIN.cred",
		"Ask the coordinator whether the policy in force lets node FROM open a connection to node TO\n"+
			"on PORT, and which rule decides. Prints e.g.\n"+
			"  allow: rule \"planners-to-search\" (policy v3)\n"+
			"  deny: no rule allows tcp/22 from search to planner (default deny, policy v3)\n"+
			"A deny is an answer, not a failure: the exit code is 0 either way.", stderr)
	admin := fs.String("admin", "", "admin credential file written by the coordinator (required)")
	proto := fs.String("proto", "tcp", "protocol: tcp, udp or icmp (icmp takes no port)")
	asJSON := fs.Bool("json", false, "print the answer as JSON (allow, rule, version, from, to, proto, port)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: usage: agentnet why FROM TO[:PORT] [--proto tcp|udp|icmp] --admin ADMIN.cred", errUsage)
	}
	req := wire.WhyRequest{From: pos[0], Proto: *proto}
	to, port, hasPort := strings.Cut(pos[1], ":")
	req.To = to
	switch *proto {
	case "tcp", "udp":
		p, err := strconv.ParseUint(port, 10, 16)
		if !hasPort || err != nil || p == 0 {
			return fmt.Errorf("%w: %s needs a port 1-65535: write %s:PORT", errUsage, *proto, to)
		}
		req.Port = uint16(p)
	case "icmp":
		if hasPort {
			return fmt.Errorf("%w: icmp has no port: write %s", errUsage, to)
		}
	default:
		return fmt.Errorf("%w: --proto %q: want tcp, udp or icmp", errUsage, *proto)
	}
	ac, err := adminClient(*admin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := ac.Why(ctx, req)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(resp)
	}
	fmt.Fprintln(stdout, whyLine(resp))
	return nil
}

// whyLine renders a decision for people.
func whyLine(r wire.WhyResponse) string {
	if r.Allow {
		return fmt.Sprintf("allow: rule %q (policy v%d)", r.Rule, r.Version)
	}
	what := r.Proto
	if r.Proto != "icmp" {
		what = fmt.Sprintf("%s/%d", r.Proto, r.Port)
	}
	return fmt.Sprintf("deny: no rule allows %s from %s to %s (default deny, policy v%d)", what, r.From, r.To, r.Version)
}
