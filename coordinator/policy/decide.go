package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Node is what the policy needs to know about a node.
type Node struct {
	Name  string
	Tags  []string
	Addrs []netip.Addr // overlay addresses; only Index.Filter uses them
}

// Decision is the outcome for one connection.
type Decision struct {
	Allow bool
	// Rule is the first rule (in document order) that allows the
	// connection; empty when it is denied (no rule allows it).
	Rule string
}

// tri is a three-valued match: a node whose tags are not known may or may
// not match a tag selector.
type tri uint8

const (
	no tri = iota
	maybe
	yes
)

// matchSel matches one selector against n. With tagsKnown false, tag
// selectors answer maybe.
func (p *Policy) matchSel(s Selector, n Node, tagsKnown bool) tri {
	switch s.Kind {
	case SelectAll:
		return yes
	case SelectNode:
		if s.Value == n.Name {
			return yes
		}
	case SelectTag:
		if !tagsKnown {
			return maybe
		}
		if slices.Contains(n.Tags, s.Value) {
			return yes
		}
	case SelectGroup:
		return p.matchList(p.Groups[s.Value], n, tagsKnown)
	}
	return no
}

func (p *Policy) matchList(sels []Selector, n Node, tagsKnown bool) tri {
	best := no
	for _, s := range sels {
		if m := p.matchSel(s, n, tagsKnown); m > best {
			if best = m; best == yes {
				break
			}
		}
	}
	return best
}

// decide evaluates every rule in order. certain is false when the answer
// depends on the tags of a node whose tags are not known.
func (p *Policy) decide(from Node, fromKnown bool, to Node, toKnown bool, proto string, port uint16) (d Decision, certain bool) {
	unsure := false
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.allows(proto, port) {
			continue
		}
		m := min(p.matchList(r.From, from, fromKnown), p.matchList(r.To, to, toKnown))
		switch m {
		case yes:
			return Decision{Allow: true, Rule: r.Name}, true
		case maybe:
			unsure = true
		}
	}
	return Decision{}, !unsure
}

// Decide returns whether from may open a proto connection to port on to
// (port is ignored for icmp), and the first rule that allows it.
func (p *Policy) Decide(from, to Node, proto string, port uint16) Decision {
	d, _ := p.decide(from, true, to, true, proto, port)
	return d
}

// Result is the outcome of one embedded test.
type Result struct {
	Test Test
	Got  Decision
	Pass bool
	// Skipped is set when the test could not be decided: it names a node
	// that is not in the node set and the outcome depends on that node's
	// tags. A skipped test neither passes nor fails.
	Skipped string
}

// Message describes the result: "file:line: test N (...): ok (...)",
// "...: skipped: ..." or "...: expected allow, got deny: no rule allows it".
func (r Result) Message(file string) string {
	loc := fmt.Sprintf("%s:%d: %s", file, r.Test.Line, r.Test.Label())
	switch {
	case r.Skipped != "":
		return loc + ": skipped: " + r.Skipped
	case r.Pass:
		return loc + ": ok (" + describe(r.Got) + ")"
	}
	return fmt.Sprintf("%s: expected %s, got %s", loc, verdict(r.Test.Expect), describe(r.Got))
}

func verdict(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

func describe(d Decision) string {
	if d.Allow {
		return fmt.Sprintf("allow by rule %q", d.Rule)
	}
	return "deny: no rule allows it"
}

// Check runs the embedded tests against nodes (names and tags). A test
// naming a node that is not in nodes evaluates that node by its name
// alone; if the outcome then depends on tags the test is skipped, so a
// policy can be written and checked before its nodes enrol.
func (p *Policy) Check(nodes []Node) []Result {
	byName := make(map[string]Node, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	out := make([]Result, 0, len(p.Tests))
	for _, t := range p.Tests {
		from, fromKnown := byName[t.From]
		to, toKnown := byName[t.To]
		from.Name, to.Name = t.From, t.To
		d, certain := p.decide(from, fromKnown, to, toKnown, t.Proto, t.Port)
		r := Result{Test: t, Got: d}
		switch {
		case !certain:
			var missing []string
			for _, n := range []struct {
				name  string
				known bool
			}{{t.From, fromKnown}, {t.To, toKnown}} {
				if !n.known && !slices.Contains(missing, n.name) {
					missing = append(missing, n.name)
				}
			}
			r.Skipped = fmt.Sprintf("depends on tags of %s, not known here (not enrolled, or not in the node list)", strings.Join(missing, ", "))
		default:
			r.Pass = d.Allow == t.Expect
		}
		out = append(out, r)
	}
	return out
}

// Failures returns the failed (not skipped) results as messages
// "file:line: test N (...): expected allow, got deny: ...".
func (p *Policy) Failures(results []Result) []string {
	var out []string
	for _, r := range results {
		if !r.Pass && r.Skipped == "" {
			out = append(out, r.Message(p.Source))
		}
	}
	return out
}
