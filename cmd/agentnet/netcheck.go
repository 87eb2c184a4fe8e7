package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/relay/netcheck"
)

func runNetcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("netcheck", "netcheck --state DIR [--json] [--timeout D]",
		"Check this host's connectivity to the relays in the node's cached network map: UDP\n"+
			"(STUN from a fresh socket), the mapped address per relay, NAT mapping behaviour\n"+
			"(main vs STUN alt port), latency, and TURN allocation over UDP, TCP and TLS with the\n"+
			"node's credentials. It sends only to the relay addresses in the map; the node need not run.\n"+
			"Exit code 1 when no relay could be reached at all.", stderr)
	state := fs.String("state", "", "state directory of the node (required)")
	asJSON := fs.Bool("json", false, "print the report as JSON (stable field names)")
	timeout := fs.Duration("timeout", 3*time.Second, "limit of each probe")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *state == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: usage: agentnet netcheck --state DIR [--json]", errUsage)
	}
	m, err := overlay.LoadCachedMap(*state)
	if err != nil {
		return err
	}
	if len(m.Relays) == 0 {
		return fmt.Errorf("the network map of %s lists no relays; start the coordinator with --relay FILE", m.Self.Name)
	}
	rep := netcheck.Check(ctx, netcheck.Config{Relays: m.Relays, Timeout: *timeout})
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printNetcheck(stdout, rep)
	}
	for _, r := range rep.Relays {
		for _, a := range r.Allocs {
			if a.OK {
				return nil
			}
		}
	}
	if rep.UDP {
		return nil
	}
	return fmt.Errorf("no relay reachable")
}

func printNetcheck(w io.Writer, rep netcheck.Report) {
	fmt.Fprintf(w, "UDP: %s\nNAT mapping: %s\n\n", yesNo(rep.UDP), rep.Mapping)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "RELAY\tPROBE\tADDR\tRESULT\tLATENCY")
	for _, r := range rep.Relays {
		stun := "mapped " + r.Mapped.String() + ", alt " + r.AltMapped.String() + " (" + r.Mapping + ")"
		if r.STUNError != "" {
			stun = "FAILED: " + r.STUNError
		}
		fmt.Fprintf(tw, "%s\tstun\t-\t%s\t%s\n", r.Name, stun, ms(r.LatencyMS))
		for _, a := range r.Allocs {
			res := "ok, relayed " + a.Relayed.String()
			if !a.OK {
				res = "FAILED: " + a.Error
			}
			fmt.Fprintf(tw, "%s\tturn/%s\t%s\t%s\t%s\n", r.Name, a.Transport, a.Addr, res, ms(a.LatencyMS))
		}
		if r.CredError != "" {
			fmt.Fprintf(tw, "%s\tcredential\t-\t%s\t-\n", r.Name, r.CredError)
		}
	}
	tw.Flush()
}

func ms(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f ms", v)
}
