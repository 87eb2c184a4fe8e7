package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// splitName takes a leading positional NAME (agentnet node revoke NAME
// --admin F) so flags may come before or after it.
func splitName(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

func runNodeRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node revoke", "node revoke NAME --admin FILE [--reason TEXT]",
		"Revoke a node for good. Its netmap stream is closed at once, every peer drops it from WireGuard\n"+
			"and DNS (live connections stop), and its identity and WireGuard keys are refused from then on,\n"+
			"even with a valid join token. The node logs the revocation and stops; to bring the machine back,\n"+
			"enrol a new identity: agentnet node --token NEW_TOKEN --state NEWDIR. Prints the revocation record.", stderr)
	admin := fs.String("admin", "", "admin credential file written by the coordinator (required)")
	reason := fs.String("reason", "", "why, kept in the revocation record and shown to the node (optional, at most 256 bytes)")
	name, rest := splitName(args)
	if err := parseWithSharedConfig(fs, rest); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name, rest = fs.Arg(0), fs.Args()[1:]
		if err := parse(fs, rest); err != nil {
			return err
		}
	}
	if name == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: usage: agentnet node revoke NAME --admin FILE [--reason TEXT]", errUsage)
	}
	if *admin == "" {
		return fmt.Errorf("%w: --admin FILE is required", errUsage)
	}
	cred, err := wire.LoadAdminCred(*admin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rec, err := adminclient.New(cred).RevokeNode(ctx, name, *reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %s (%s, %s) at %s; %d WireGuard key(s) refused from now on\n",
		rec.Node.Name, rec.Node.IPv4, rec.Node.DID, rec.At.UTC().Format(time.RFC3339), len(rec.WGKeys))
	return nil
}

func runNodeRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node rotate", "node rotate --state DIR",
		"Ask the running node to replace its WireGuard key now: it makes a new key, switches to it,\n"+
			"has the coordinator bind it (the old key is refused from then on) and peers replace it;\n"+
			"open connections survive. Prints the old and new key fingerprints.", stderr)
	state := fs.String("state", "", "state directory of the running node (required; also read from the node's config file)")
	if err := parseWithSharedConfig(fs, args); err != nil {
		return err
	}
	if *state == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: usage: agentnet node rotate --state DIR", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	res, err := overlay.NewLocalClient(*state).Rotate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rotated WireGuard key %s → %s\n", res.Old, res.New)
	return nil
}
