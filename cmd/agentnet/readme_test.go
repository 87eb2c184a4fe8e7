package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/agentnet/agentnet/coordinator/policy"
)

// shellBlocks returns the fenced ```sh blocks of a Markdown file.
func shellBlocks(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		out = append(out, m[1])
	}
	return out
}

// TestREADMETokensSuffice: a README block that enrols several nodes with
// one token creates it --reusable (issue 16 item 1: the multi-host section
// used a one-shot token on two hosts; the second failed with token_used).
func TestREADMETokensSuffice(t *testing.T) {
	uses := regexp.MustCompile(`agentnet node [^\n]*--token "?\$(\w+)`)
	for i, block := range shellBlocks(t, "../../README.md") {
		n := map[string]int{}
		for _, m := range uses.FindAllStringSubmatch(block, -1) {
			n[m[1]]++
		}
		var nodes int
		for _, c := range n {
			nodes = max(nodes, c)
		}
		if nodes < 2 {
			continue
		}
		for _, l := range strings.Split(block, "\n") {
			if strings.Contains(l, "token create") && !strings.Contains(l, "--reusable") {
				t.Errorf("README sh block %d enrols %d nodes with one token, but creates it without --reusable:\n%s", i+1, nodes, l)
			}
		}
	}
}

// TestDocsDefaultPolicy: the README and docs/POLICY.md say what a fresh
// coordinator does, which is the built-in policy's allow-all (issue 16
// item 1: one place said "default deny").
func TestDocsDefaultPolicy(t *testing.T) {
	if d := policy.Default().Decide(policy.Node{Name: "a"}, policy.Node{Name: "b", Tags: []string{"tag:x"}}, "tcp", 22); !d.Allow {
		t.Fatalf("the built-in policy denies a→b:22; the docs below say it allows everything")
	}
	for _, f := range []string{"../../README.md", "../../docs/POLICY.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if !strings.Contains(strings.Join(strings.Fields(s), " "), "allows every node to reach every node") {
			t.Errorf("%s does not say that a new coordinator allows every node to reach every node", f)
		}
		// "default deny" is right inside a policy (what no rule allows)
		// and in why's output, never as the network's default.
		for _, bad := range []string{"(default deny)", "deny by default", "default-deny network"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s says %q: a new coordinator allows everything", f, bad)
			}
		}
	}
}
