package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/agentnet/agentnet/overlay"
)

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status --state DIR [--json]",
		"Show the running node (self) and its peers: name, virtual IP, did, online, endpoint,\n"+
			"path, handshake age and bytes received/sent. --json output fields are stable.", stderr)
	state := fs.String("state", "", "state directory of the running node (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *state == "" {
		return fmt.Errorf("%w: --state DIR is required", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := overlay.NewLocalClient(*state).Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printStatus(stdout, st)
}

// printStatus writes the human status: a coordinator line and an aligned
// table of self and peers (tabwriter counts runes, so the "…" of a short
// did keeps columns aligned).
func printStatus(w io.Writer, st overlay.Status) error {
	conn := "connected"
	if !st.Connected {
		conn = "NOT connected (running from cached map)"
	}
	if st.Refused != nil {
		what := "REVOKED by an admin"
		if st.Refused.Code == "node_expired" {
			what = "EXPIRED"
		}
		fmt.Fprintf(w, "this node was %s: %s\n", what, st.Refused.Error)
		conn = "no longer contacted"
	}
	fmt.Fprintf(w, "coordinator %s: %s, map serial %d\n\n", st.Coordinator, conn, st.MapSerial)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIPV4\tIPV6\tDID\tONLINE\tENDPOINT\tPATH\tHANDSHAKE\tRX\tTX")
	row := func(p overlay.PeerStatus, self bool) {
		ep, path, hs := p.Endpoint, p.Path.String(), "-"
		if self {
			ep, path = st.Listen, "self"
		}
		if !p.LastHandshake.IsZero() {
			hs = (time.Duration(p.HandshakeAge * float64(time.Second))).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\n", orDash(p.Name), orDash(p.IPv4), orDash(p.IPv6), orDash(shortDID(p.DID)), yesNo(p.Online),
			orDash(ep), orDash(path), hs, bytesHuman(p.RxBytes), bytesHuman(p.TxBytes))
	}
	row(st.Self, true)
	for _, p := range st.Peers {
		row(p, false)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Why a peer is not direct, one line each below the table.
	for _, p := range st.Peers {
		if p.Path != nil && p.Path.Reason != "" {
			fmt.Fprintf(w, "%s: %s: %s\n", p.Name, p.Path, p.Path.Reason)
		}
	}
	return nil
}

func runPing(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ping", "ping --state DIR [--count N] [--json] NAME",
		"Send ICMP echo requests to a peer through the WireGuard tunnel; print RTT and the path used.\n"+
			"--json prints one JSON object per reply (fields peer, ip, rtt_ms, path, endpoint; stable).", stderr)
	state := fs.String("state", "", "state directory of the running node (required)")
	count := fs.Int("count", 3, "number of pings")
	asJSON := fs.Bool("json", false, "print one JSON object per reply, one per line")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *state == "" || fs.NArg() != 1 {
		return fmt.Errorf("%w: usage: agentnet ping --state DIR [--count N] [--json] NAME", errUsage)
	}
	c := overlay.NewLocalClient(*state)
	for i := range *count {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		r, err := c.Ping(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		if *asJSON {
			if err := json.NewEncoder(stdout).Encode(r); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(stdout, "pong from %s (%s) via %s %s in %.2f ms\n", r.Peer, r.IP, r.Path, r.Endpoint, r.RTTms)
	}
	return nil
}

func shortDID(d string) string {
	if len(d) > 24 {
		return d[:20] + "…" + d[len(d)-4:]
	}
	return d
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesHuman(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
