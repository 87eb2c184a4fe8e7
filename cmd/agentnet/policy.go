package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"github.com/agentnet/agentnet/coordinator/policy"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

const policyUsage = `Usage: agentnet policy set FILE --admin ADMIN.cred
       agentnet policy get --admin ADMIN.cred [--version N] [--json]
       agentnet policy check FILE [--nodes NODES.json]

Manage the central access policy (docs/POLICY.md): rules say which nodes may
open connections to which, on which ports; anything else is denied.
  set    validate FILE, run its tests against the enrolled nodes, and make it
         the new policy version (pushed to every node at once)
  get    print the policy in force, or an older --version
  check  validate FILE offline and run the tests that the names and tags at
         hand can decide
Run 'agentnet policy SUBCOMMAND --help' for its flags.
`

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return fmt.Errorf("%w: missing subcommand: set, get or check", errUsage)
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, policyUsage)
		return nil
	case "set":
		return runPolicySet(ctx, args[1:], stdout, stderr)
	case "get":
		return runPolicyGet(ctx, args[1:], stdout, stderr)
	case "check":
		return runPolicyCheck(args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown subcommand %q: want set, get or check", errUsage, args[0])
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments ("set FILE --admin X") and returns the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// adminClient loads the --admin credential.
func adminClient(path string) (*adminclient.Client, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: --admin FILE is required (the admin.cred the coordinator wrote into its data dir)", errUsage)
	}
	cred, err := wire.LoadAdminCred(path)
	if err != nil {
		return nil, err
	}
	return adminclient.New(cred), nil
}

// apiMessage returns the coordinator's own message for a refusal (which
// for policy refusals lists every reason on its own line), else err.
func apiMessage(err error) error {
	var ae *wire.APIError
	if errors.As(err, &ae) && (ae.Code == wire.CodePolicyInvalid || ae.Code == wire.CodePolicyTestsFailed) {
		return errors.New(ae.Message)
	}
	return err
}

func runPolicySet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy set", "policy set FILE --admin ADMIN.cred",
		"Validate the policy in FILE, run its tests against the nodes enrolled now, and make it the new\n"+
			"policy version; every node gets a map compiled from it at once. Prints the new version.\n"+
			"If the policy is invalid or a test fails, nothing changes: the reasons are printed, exit 1.", stderr)
	admin := fs.String("admin", "", "admin credential file written by the coordinator (required)")
	by := fs.String("by", "", "who sets the policy, recorded with the version (default: the login name)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: usage: agentnet policy set FILE --admin ADMIN.cred", errUsage)
	}
	ac, err := adminClient(*admin)
	if err != nil {
		return err
	}
	text, err := os.ReadFile(pos[0])
	if err != nil {
		return fmt.Errorf("read policy: %w", err)
	}
	if *by == "" {
		if u, err := user.Current(); err == nil {
			*by = u.Username
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := ac.SetPolicy(ctx, wire.PolicySetRequest{Text: string(text), Source: filepath.Base(pos[0]), By: *by})
	if err != nil {
		return apiMessage(err)
	}
	fmt.Fprintf(stdout, "policy v%d set: %d rules, %d tests passed", resp.Version, resp.Rules, resp.Passed)
	if len(resp.Skipped) > 0 {
		fmt.Fprintf(stdout, ", %d skipped", len(resp.Skipped))
	}
	fmt.Fprintln(stdout)
	for _, s := range resp.Skipped {
		fmt.Fprintln(stdout, "  "+s)
	}
	return nil
}

func runPolicyGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy get", "policy get --admin ADMIN.cred [--version N] [--json]",
		"Print the policy in force (or version N) exactly as it was set, so it can be edited and set\n"+
			"again. A '# policy vN ...' line naming the version, time and author goes to stderr.\n"+
			"Version 0 is the built-in default (every node may reach every node).", stderr)
	admin := fs.String("admin", "", "admin credential file written by the coordinator (required)")
	version := fs.Uint64("version", 0, "policy version to print (default: the one in force)")
	asJSON := fs.Bool("json", false, "print the version record as JSON (version, text, source, created, by, address)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	ac, err := adminClient(*admin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rec, err := ac.GetPolicy(ctx, *version)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rec)
	}
	if rec.Version == 0 {
		fmt.Fprintf(stderr, "# policy v0: the built-in default\n")
	} else {
		fmt.Fprintf(stderr, "# policy v%d from %s, set %s by %s\n", rec.Version, rec.Source, rec.Created.Format(time.RFC3339), rec.By)
	}
	_, err = io.WriteString(stdout, rec.Text)
	return err
}

func runPolicyCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy check", "policy check FILE [--nodes NODES.json]",
		"Validate the policy in FILE offline (no coordinator) and run its tests. Without --nodes a test\n"+
			"is decided by node names alone and skipped when the answer depends on tags; with --nodes the\n"+
			"names and tags come from NODES.json: a JSON array of {\"name\": ..., \"tags\": [...]} (the\n"+
			"admin API's node list has this shape). Exit 1 if the policy is invalid or a test fails.", stderr)
	nodesFile := fs.String("nodes", "", "JSON file of nodes (name and tags) to run the tests against (optional)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: usage: agentnet policy check FILE [--nodes NODES.json]", errUsage)
	}
	text, err := os.ReadFile(pos[0])
	if err != nil {
		return fmt.Errorf("read policy: %w", err)
	}
	src := filepath.Base(pos[0])
	p, err := policy.Parse(src, text)
	if err != nil {
		return fmt.Errorf("policy is not valid:\n%w", err)
	}
	var nodes []policy.Node
	if *nodesFile != "" {
		if nodes, err = loadPolicyNodes(*nodesFile); err != nil {
			return err
		}
	}
	results := p.Check(nodes)
	failed, skipped := 0, 0
	for _, r := range results {
		switch {
		case r.Skipped != "":
			skipped++
		case !r.Pass:
			failed++
		}
		fmt.Fprintln(stdout, r.Message(src))
	}
	fmt.Fprintf(stdout, "%s: valid: %d groups, %d rules; tests: %d passed, %d failed, %d skipped\n",
		src, len(p.Groups), len(p.Rules), len(results)-failed-skipped, failed, skipped)
	if failed > 0 {
		return fmt.Errorf("%d of %d tests failed", failed, len(results))
	}
	return nil
}

// loadPolicyNodes reads a JSON array of {name, tags} (extra fields, such as
// those of the admin node list, are ignored).
func loadPolicyNodes(path string) ([]policy.Node, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --nodes: %w", err)
	}
	var raw []struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: --nodes %s: want a JSON array of {\"name\": ..., \"tags\": [...]}: %v", errUsage, path, err)
	}
	nodes := make([]policy.Node, 0, len(raw))
	for i, n := range raw {
		if n.Name == "" {
			return nil, fmt.Errorf("%w: --nodes %s: entry %d has no name", errUsage, path, i+1)
		}
		nodes = append(nodes, policy.Node{Name: n.Name, Tags: n.Tags})
	}
	return nodes, nil
}
