// Package policy is agentnet's central access policy: the YAML document an
// administrator writes (groups, rules, embedded tests), its validation with
// line-numbered errors, the decision for one connection (Decide, behind
// 'agentnet why'), the embedded tests (Check), and the compiled per-node form
// carried in every network map (Index.Filter, netmap.Filter).
//
// Rules only allow; anything no rule allows is denied (default deny). A rule
// lets the nodes selected by From open connections to the nodes selected by
// To on the listed protocols and ports; replies of an allowed connection are
// allowed (the node-side filter is connection-oriented, see netmap.Filter).
//
// The package does no I/O: it parses bytes it is given and computes.
package policy

import (
	"errors"
	"fmt"
	"strings"
)

// SelectorKind says what a Selector matches.
type SelectorKind uint8

// Selector kinds.
const (
	SelectAll   SelectorKind = iota + 1 // "*": every node
	SelectNode                          // a node name: that node
	SelectTag                           // "tag:x": every node carrying tag:x
	SelectGroup                         // "group:g": every member of group g
)

// Selector picks nodes in a rule's from/to or a group's members.
type Selector struct {
	Kind SelectorKind
	// Value is the node name, the whole tag ("tag:x") or the group name
	// (without "group:"); empty for SelectAll.
	Value string
}

func (s Selector) String() string {
	switch s.Kind {
	case SelectAll:
		return "*"
	case SelectGroup:
		return "group:" + s.Value
	}
	return s.Value
}

// Protocols a rule or test may name.
const (
	ProtoTCP  = "tcp"
	ProtoUDP  = "udp"
	ProtoICMP = "icmp"
)

// PortSpec is one entry of a rule's ports: a protocol and an inclusive
// destination port range.
type PortSpec struct {
	Proto string // ProtoTCP, ProtoUDP, ProtoICMP, or "" for every protocol
	// First and Last bound the destination ports (inclusive). Both 0 means
	// every port; always 0 for icmp and for "".
	First, Last uint16
}

// AllPorts reports whether s covers every port of its protocol.
func (s PortSpec) AllPorts() bool { return s.First == 0 && s.Last == 0 }

func (s PortSpec) String() string {
	switch {
	case s.Proto == "":
		return "*"
	case s.Proto == ProtoICMP || s.AllPorts():
		return s.Proto
	case s.First == s.Last:
		return fmt.Sprintf("%s:%d", s.Proto, s.First)
	}
	return fmt.Sprintf("%s:%d-%d", s.Proto, s.First, s.Last)
}

// matches reports whether s allows proto to port.
func (s PortSpec) matches(proto string, port uint16) bool {
	if s.Proto != "" && s.Proto != proto {
		return false
	}
	return proto == ProtoICMP || s.AllPorts() || s.First <= port && port <= s.Last
}

// Rule allows connections from the From nodes to the To nodes.
type Rule struct {
	Name  string
	From  []Selector
	To    []Selector
	Ports []PortSpec // empty: every protocol and port
	Line  int        // line of the rule in the source
}

// allows reports whether the rule's ports cover proto/port.
func (r *Rule) allows(proto string, port uint16) bool {
	if len(r.Ports) == 0 {
		return true
	}
	for _, p := range r.Ports {
		if p.matches(proto, port) {
			return true
		}
	}
	return false
}

// Test is one embedded expectation: a connection from From to To on
// Proto/Port is allowed (Expect) or denied (!Expect).
type Test struct {
	Name   string // optional
	From   string // node name
	To     string // node name
	Proto  string // default tcp
	Port   uint16 // 0 for icmp
	Expect bool   // true: expect allow
	Line   int
	index  int // 1-based position among the tests
}

// Label names the test in messages: its name if it has one, else its
// position and what it checks.
func (t Test) Label() string {
	what := fmt.Sprintf("%s -> %s", t.From, t.Dest())
	if t.Name != "" {
		return fmt.Sprintf("test %d %q (%s)", t.index, t.Name, what)
	}
	return fmt.Sprintf("test %d (%s)", t.index, what)
}

// Dest is the test's destination as written: "search:8080/tcp", "search/icmp".
func (t Test) Dest() string {
	if t.Proto == ProtoICMP {
		return t.To + "/icmp"
	}
	return fmt.Sprintf("%s:%d/%s", t.To, t.Port, t.Proto)
}

// Policy is a parsed, validated policy document.
type Policy struct {
	// Source is the file name used in messages ("policy.yaml").
	Source string
	// Groups maps a group name (without "group:") to its members, which
	// are node, tag or "*" selectors.
	Groups map[string][]Selector
	Rules  []Rule
	Tests  []Test
}

// DefaultText is the built-in initial policy: every node may reach every
// node on every port, so a new network works before anyone writes a policy.
const DefaultText = `# agentnet built-in default policy: every node may reach every node on
# every port. Replace it with 'agentnet policy set FILE --admin ADMIN.cred'
# (see docs/POLICY.md).
rules:
  - name: allow-all
    from: ["*"]
    to: ["*"]
`

// Default returns the parsed DefaultText.
func Default() *Policy {
	p, err := Parse("default", []byte(DefaultText))
	if err != nil {
		panic("policy: built-in default does not parse: " + err.Error())
	}
	return p
}

// Issue is one problem found in a policy document.
type Issue struct {
	File string
	Line int // 0: not tied to a line
	Msg  string
}

func (i Issue) String() string {
	if i.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", i.File, i.Line, i.Msg)
	}
	return i.File + ": " + i.Msg
}

// Error is a policy that failed to parse or validate: every problem found,
// in source order, each "file:line: what".
type Error struct {
	Issues []Issue
}

func (e *Error) Error() string {
	s := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		s[i] = is.String()
	}
	return strings.Join(s, "\n")
}

// Reasons returns the issues as strings, one per problem.
func (e *Error) Reasons() []string {
	s := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		s[i] = is.String()
	}
	return s
}

// ErrUnknownNode is returned by Index.Decide for a name not in the node set.
var ErrUnknownNode = errors.New("no such node")
