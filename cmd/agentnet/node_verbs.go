package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// nodeVerbFunc runs one admin sub-verb of 'agentnet node'.
type nodeVerbFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// nodeVerbs are the admin sub-verbs: 'agentnet node VERB ...'. A first
// argument that is not one of them (a flag, or nothing) runs the node as
// always. Add a verb with one line here and one in nodeVerbsHelp.
func nodeVerbs() map[string]nodeVerbFunc {
	return map[string]nodeVerbFunc{
		"tags":   runNodeTags,
		"revoke": runNodeRevoke,
		"rotate": runNodeRotate,
	}
}

// nodeVerbsHelp is appended to 'agentnet node --help'.
const nodeVerbsHelp = "\n\nAdmin sub-commands (talk to the coordinator, not a running node):\n" +
	"  agentnet node tags NAME tag:a,tag:b --admin ADMIN.cred   replace a node's tags\n" +
	"  agentnet node revoke NAME --admin ADMIN.cred [--reason T] cut a node off for good (its identity can never re-enroll)\n" +
	"\nNode sub-commands (talk to a running node):\n" +
	"  agentnet node rotate --state DIR                         replace the node's WireGuard key now\n"

// nodeVerb returns the sub-verb args name, if any.
func nodeVerb(args []string) (nodeVerbFunc, bool) {
	if len(args) == 0 {
		return nil, false
	}
	f, ok := nodeVerbs()[args[0]]
	return f, ok
}

func runNodeTags(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node tags", "node tags NAME TAGS --admin ADMIN.cred",
		"Replace the tags of node NAME with TAGS, a comma-separated list such as tag:search,tag:prod\n"+
			"(\"\" removes every tag). Policy rules select nodes by tag, so every node gets a new map at once.", stderr)
	admin := fs.String("admin", "", "admin credential file written by the coordinator (required)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: usage: agentnet node tags NAME tag:a,tag:b --admin ADMIN.cred", errUsage)
	}
	tags := splitList(pos[1])
	for _, t := range tags {
		if !strings.HasPrefix(t, "tag:") {
			return fmt.Errorf("%w: %q is not a tag: tags look like tag:search", errUsage, t)
		}
	}
	ac, err := adminClient(*admin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := ac.SetNodeTags(ctx, pos[0], tags)
	if err != nil {
		return err
	}
	if len(n.Tags) == 0 {
		fmt.Fprintf(stdout, "%s: no tags\n", n.Name)
		return nil
	}
	fmt.Fprintf(stdout, "%s: %s\n", n.Name, strings.Join(n.Tags, ","))
	return nil
}
