package policy

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParsePolicy feeds arbitrary documents to Parse: it must never panic,
// must fail only with an *Error whose every issue names the file, and an
// accepted policy must be usable by Decide, Check and NewIndex.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		example,
		DefaultText,
		benchPolicy,
		"rules: []\n",
		"",
		"groups:\n  g: &x [a]\n  h: *x\nrules: []\n",
		"rules:\n  - {name: a, from: [\"*\"], to: [group:g]}\n",
		"rules:\n  - name: a\n    from: [a]\n    to: [b]\n    ports: [tcp:1-65535, udp:0, icmp:1, \"*\"]\n",
		"tests:\n  - {from: a, to: \"b:65535\", proto: udp, expect: deny}\nrules: []\n",
		"[1, 2]\n",
		"rules: {a: b}\n",
		"? [a]\n: b\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse("fuzz.yaml", src)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || len(pe.Issues) == 0 {
				t.Fatalf("error %v is not a non-empty *Error", err)
			}
			for _, r := range pe.Reasons() {
				if !strings.HasPrefix(r, "fuzz.yaml") {
					t.Fatalf("reason %q does not name the file", r)
				}
			}
			return
		}
		nodes := []Node{node("a", 1, "tag:x"), node("b", 2)}
		p.Check(nodes)
		p.Check(nil)
		ix := NewIndex(p, nodes, Options{})
		for i := range nodes {
			ix.Filter(i)
			if ix.Reachable(i).Has(i) {
				t.Fatal("a node is reachable from itself")
			}
		}
		p.Decide(nodes[0], nodes[1], ProtoTCP, 80)
	})
}
