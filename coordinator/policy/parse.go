package policy

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Limits of a policy document; a bigger one is refused before parsing.
const (
	MaxBytes    = 256 << 10
	maxIssues   = 50 // further problems are summarised in one line
	maxNameLen  = 64
	maxTagLen   = 64
	maxNodeName = 63
)

// Parse parses and validates a policy document. name is the file name used
// in messages. On failure the error is an *Error listing every problem with
// its line, e.g. `policy.yaml:7: rule 2 (planners-to-search): unknown group "planer"`.
//
// Unknown keys, duplicate keys, duplicate rule or group names, unknown
// groups, malformed selectors, ports and tests are refused. YAML anchors and
// aliases are refused. An empty document is refused: write `rules: []` to
// deny everything on purpose.
func Parse(name string, src []byte) (*Policy, error) {
	if name == "" {
		name = "policy"
	}
	ps := &parser{file: name, p: &Policy{Source: name, Groups: map[string][]Selector{}}}
	if len(src) > MaxBytes {
		ps.errf(0, "policy is %d bytes, at most %d", len(src), MaxBytes)
		return nil, ps.err()
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(trimBOM(src), &doc); err != nil {
		ps.yamlErr(err)
		return nil, ps.err()
	}
	if doc.Kind == 0 || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		ps.errf(0, "policy is empty; it needs at least a rules: list (write \"rules: []\" to deny everything on purpose)")
		return nil, ps.err()
	}
	ps.document(doc.Content[0])
	if len(ps.issues) > 0 {
		return nil, ps.err()
	}
	return ps.p, nil
}

type parser struct {
	file   string
	p      *Policy
	issues []Issue
}

func (ps *parser) errf(line int, format string, args ...any) {
	if len(ps.issues) == maxIssues {
		ps.issues = append(ps.issues, Issue{File: ps.file, Line: line, Msg: "too many problems; fix these first"})
	}
	if len(ps.issues) > maxIssues {
		return
	}
	ps.issues = append(ps.issues, Issue{File: ps.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (ps *parser) err() error { return &Error{Issues: ps.issues} }

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlErr turns a YAML syntax error ("yaml: line 3: did not find expected
// key") into issues with their lines.
func (ps *parser) yamlErr(err error) {
	msgs := []string{err.Error()}
	if te, ok := err.(*yaml.TypeError); ok {
		msgs = te.Errors
	}
	for _, m := range msgs {
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			line, _ := strconv.Atoi(sm[1])
			ps.errf(line, "YAML: %s", sm[2])
			continue
		}
		ps.errf(0, "YAML: %s", strings.TrimPrefix(m, "yaml: "))
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// mapping returns the key/value pairs of a mapping node, refusing duplicate
// and unknown keys (known lists the allowed ones). what names the mapping
// in messages.
func (ps *parser) mapping(n *yaml.Node, what string, known ...string) (map[string]*yaml.Node, bool) {
	if n.Kind == yaml.AliasNode {
		ps.errf(n.Line, "%s: YAML aliases are not supported; write the value out", what)
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		ps.errf(n.Line, "%s must be a mapping with keys %s", what, strings.Join(known, ", "))
		return nil, false
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			ps.errf(k.Line, "%s: keys must be plain words", what)
			ok = false
			continue
		}
		if _, dup := out[k.Value]; dup {
			ps.errf(k.Line, "%s: key %q given twice", what, k.Value)
			ok = false
			continue
		}
		if !contains(known, k.Value) {
			ps.errf(k.Line, "%s: unknown key %q; valid keys: %s", what, k.Value, strings.Join(known, ", "))
			ok = false
			continue
		}
		if v.Kind == yaml.AliasNode {
			ps.errf(v.Line, "%s: %s: YAML aliases are not supported; write the value out", what, k.Value)
			ok = false
			continue
		}
		out[k.Value] = v
	}
	return out, ok
}

// strings returns the items of a sequence of scalars. A single scalar is
// not accepted: lists are always written as lists.
func (ps *parser) strList(n *yaml.Node, what string) ([]string, []int, bool) {
	if n.Kind != yaml.SequenceNode {
		ps.errf(n.Line, "%s must be a list, e.g. [a, b]", what)
		return nil, nil, false
	}
	vals, lines := make([]string, 0, len(n.Content)), make([]int, 0, len(n.Content))
	ok := true
	for _, it := range n.Content {
		if it.Kind == yaml.AliasNode {
			ps.errf(it.Line, "%s: YAML aliases are not supported (write \"*\" in quotes for every node)", what)
			ok = false
			continue
		}
		if it.Kind != yaml.ScalarNode || isNull(it) {
			ps.errf(it.Line, "%s: items must be plain strings", what)
			ok = false
			continue
		}
		vals = append(vals, it.Value)
		lines = append(lines, it.Line)
	}
	return vals, lines, ok
}

func (ps *parser) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		ps.errf(n.Line, "%s must be a plain string", what)
		return "", false
	}
	return n.Value, true
}

func (ps *parser) document(root *yaml.Node) {
	m, _ := ps.mapping(root, "policy", "groups", "rules", "tests")
	if m == nil {
		return
	}
	if g := m["groups"]; g != nil && !isNull(g) {
		ps.groups(g)
	}
	if r := m["rules"]; r == nil {
		ps.errf(root.Line, "policy has no rules: list (write \"rules: []\" to deny everything on purpose)")
	} else if !isNull(r) {
		ps.rules(r)
	}
	if t := m["tests"]; t != nil && !isNull(t) {
		ps.tests(t)
	}
}

func (ps *parser) groups(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		ps.errf(n.Line, "groups must be a mapping of group name to a list of members, e.g. planners: [planner, tag:planning]")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		what := fmt.Sprintf("group %q", name)
		if k.Kind != yaml.ScalarNode || !validWord(name) {
			ps.errf(k.Line, "group name %.70q: use 1-%d lowercase letters, digits, '-', '_' or '.'", name, maxNameLen)
			continue
		}
		if v.Kind == yaml.AliasNode {
			ps.errf(v.Line, "%s: YAML aliases are not supported; write the members out", what)
			continue
		}
		if _, dup := ps.p.Groups[name]; dup {
			ps.errf(k.Line, "group %q defined twice", name)
			continue
		}
		vals, lines, _ := ps.strList(v, what)
		members := make([]Selector, 0, len(vals))
		for j, s := range vals {
			sel, err := parseSelector(s)
			if err == nil && sel.Kind == SelectGroup {
				err = fmt.Errorf("groups cannot contain groups (%s); list its members", s)
			}
			if err != nil {
				ps.errf(lines[j], "%s: %v", what, err)
				continue
			}
			members = append(members, sel)
		}
		ps.p.Groups[name] = members
	}
}

func (ps *parser) rules(n *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		ps.errf(n.Line, "rules must be a list of rules, each with name, from, to and optional ports")
		return
	}
	seen := map[string]int{}
	for i, rn := range n.Content {
		what := fmt.Sprintf("rule %d", i+1)
		m, _ := ps.mapping(rn, what, "name", "from", "to", "ports")
		if m == nil {
			continue
		}
		r := Rule{Line: rn.Line}
		if v := m["name"]; v == nil {
			ps.errf(rn.Line, "%s: needs a name (used by 'agentnet why' and in packet counters)", what)
		} else if s, ok := ps.scalar(v, what+": name"); ok {
			if !validWord(s) {
				ps.errf(v.Line, "%s: name %.70q: use 1-%d lowercase letters, digits, '-', '_' or '.'", what, s, maxNameLen)
			} else if prev, dup := seen[s]; dup {
				ps.errf(v.Line, "%s (%s): name already used by rule %d; rule names must be unique", what, s, prev)
			} else {
				seen[s] = i + 1
				r.Name = s
				what = fmt.Sprintf("rule %d (%s)", i+1, s)
			}
		}
		for _, side := range []struct {
			key string
			dst *[]Selector
		}{{"from", &r.From}, {"to", &r.To}} {
			v := m[side.key]
			if v == nil {
				ps.errf(rn.Line, "%s: needs %s: a list of node names, tag:x, group:g or \"*\"", what, side.key)
				continue
			}
			vals, lines, _ := ps.strList(v, what+": "+side.key)
			if len(vals) == 0 && v.Kind == yaml.SequenceNode {
				ps.errf(v.Line, "%s: %s is empty; it would never match", what, side.key)
			}
			for j, s := range vals {
				sel, err := parseSelector(s)
				if err == nil && sel.Kind == SelectGroup {
					if _, ok := ps.p.Groups[sel.Value]; !ok {
						err = fmt.Errorf("unknown group %q", sel.Value)
					}
				}
				if err != nil {
					ps.errf(lines[j], "%s: %v", what, err)
					continue
				}
				*side.dst = append(*side.dst, sel)
			}
		}
		if v := m["ports"]; v != nil && !isNull(v) {
			r.Ports = ps.ports(v, what)
		}
		ps.p.Rules = append(ps.p.Rules, r)
	}
}

// ports parses a rule's ports list. "*" anywhere means everything (nil).
func (ps *parser) ports(n *yaml.Node, what string) []PortSpec {
	if n.Kind != yaml.SequenceNode {
		ps.errf(n.Line, "%s: ports must be a list, e.g. [tcp:8080, udp:53, icmp]", what)
		return nil
	}
	var out []PortSpec
	all := false
	for _, it := range n.Content {
		if it.Kind != yaml.ScalarNode || isNull(it) {
			ps.errf(it.Line, "%s: ports: items must be plain strings like tcp:8080 (write \"*\" in quotes)", what)
			continue
		}
		spec, err := ParsePortSpec(it.Value)
		if err != nil {
			ps.errf(it.Line, "%s: %v", what, err)
			continue
		}
		if spec.Proto == "" {
			all = true
		}
		out = append(out, spec)
	}
	if all {
		return nil
	}
	return out
}

// ParsePortSpec parses one ports entry: "*", "tcp", "tcp:*", "tcp:8080",
// "tcp:9000-9100", "udp:53", "icmp".
func ParsePortSpec(s string) (PortSpec, error) {
	if s == "*" {
		return PortSpec{}, nil
	}
	proto, ports, hasPorts := strings.Cut(s, ":")
	switch proto {
	case ProtoTCP, ProtoUDP:
	case ProtoICMP:
		if hasPorts {
			return PortSpec{}, fmt.Errorf("port %.40q: icmp has no ports; write icmp", s)
		}
		return PortSpec{Proto: ProtoICMP}, nil
	default:
		if _, err := strconv.Atoi(proto); err == nil && !hasPorts {
			return PortSpec{}, fmt.Errorf("port %.40q needs a protocol: write tcp:%s or udp:%s", s, s, s)
		}
		return PortSpec{}, fmt.Errorf("port %.40q: want tcp:PORT, tcp:FIRST-LAST, udp:..., icmp or \"*\"", s)
	}
	if !hasPorts || ports == "*" {
		return PortSpec{Proto: proto}, nil
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	first, err1 := parsePort(lo)
	last, err2 := first, error(nil)
	if isRange {
		last, err2 = parsePort(hi)
	}
	if err1 != nil || err2 != nil {
		return PortSpec{}, fmt.Errorf("port %.40q: ports are numbers 1-65535, a range is FIRST-LAST", s)
	}
	if first > last {
		return PortSpec{}, fmt.Errorf("port %.40q: range starts after it ends", s)
	}
	return PortSpec{Proto: proto, First: first, Last: last}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 || v > 65535 {
		return 0, strconv.ErrRange
	}
	return uint16(v), nil
}

func (ps *parser) tests(n *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		ps.errf(n.Line, "tests must be a list of {from, to, expect}")
		return
	}
	for i, tn := range n.Content {
		what := fmt.Sprintf("test %d", i+1)
		m, _ := ps.mapping(tn, what, "name", "from", "to", "proto", "expect")
		if m == nil {
			continue
		}
		t := Test{Line: tn.Line, index: i + 1, Proto: ProtoTCP}
		ok := true
		get := func(key, hint string) (string, int, bool) {
			v := m[key]
			if v == nil {
				ps.errf(tn.Line, "%s: needs %s (%s)", what, key, hint)
				return "", 0, false
			}
			s, good := ps.scalar(v, what+": "+key)
			return s, v.Line, good
		}
		if v := m["name"]; v != nil {
			t.Name, _ = ps.scalar(v, what+": name")
		}
		if v := m["proto"]; v != nil {
			s, good := ps.scalar(v, what+": proto")
			switch {
			case !good:
				ok = false
			case s == ProtoTCP || s == ProtoUDP || s == ProtoICMP:
				t.Proto = s
			default:
				ps.errf(v.Line, "%s: proto %.20q: want tcp, udp or icmp", what, s)
				ok = false
			}
		}
		if s, line, good := get("from", "a node name"); good {
			if !validNodeName(s) {
				ps.errf(line, "%s: from %.70q is not a node name", what, s)
				ok = false
			}
			t.From = s
		} else {
			ok = false
		}
		if s, line, good := get("to", `"name:port", or a name for icmp`); good {
			name, port, hasPort := strings.Cut(s, ":")
			t.To = name
			switch {
			case !validNodeName(name):
				ps.errf(line, "%s: to %.70q: want \"name:port\" with a node name", what, s)
				ok = false
			case t.Proto == ProtoICMP && hasPort:
				ps.errf(line, "%s: to %.70q: icmp has no port; write the node name alone", what, s)
				ok = false
			case t.Proto != ProtoICMP && !hasPort:
				ps.errf(line, "%s: to %.70q needs a port: write \"%s:PORT\" (or proto: icmp)", what, s, name)
				ok = false
			case hasPort:
				p, err := parsePort(port)
				if err != nil {
					ps.errf(line, "%s: to %.70q: port must be 1-65535", what, s)
					ok = false
				}
				t.Port = p
			}
		} else {
			ok = false
		}
		if s, line, good := get("expect", "allow or deny"); good {
			switch s {
			case "allow":
				t.Expect = true
			case "deny":
			default:
				ps.errf(line, "%s: expect %.20q: want allow or deny", what, s)
				ok = false
			}
		} else {
			ok = false
		}
		if ok {
			ps.p.Tests = append(ps.p.Tests, t)
		}
	}
}

// parseSelector parses a node name, "tag:x", "group:g" or "*".
func parseSelector(s string) (Selector, error) {
	switch {
	case s == "*":
		return Selector{Kind: SelectAll}, nil
	case strings.HasPrefix(s, "tag:"):
		if !ValidTag(s) {
			return Selector{}, fmt.Errorf("tag %.70q: write tag: followed by lowercase letters, digits and '-'", s)
		}
		return Selector{Kind: SelectTag, Value: s}, nil
	case strings.HasPrefix(s, "group:"):
		g := strings.TrimPrefix(s, "group:")
		if !validWord(g) {
			return Selector{}, fmt.Errorf("group %.70q: group names are lowercase letters, digits, '-', '_' or '.'", s)
		}
		return Selector{Kind: SelectGroup, Value: g}, nil
	case validNodeName(s):
		return Selector{Kind: SelectNode, Value: s}, nil
	}
	return Selector{}, fmt.Errorf("%.70q is not a node name, tag:x, group:g or \"*\"", s)
}

// ValidTag reports whether t is "tag:" followed by 1+ of [a-z0-9-], at most
// 64 bytes in all: the tags join tokens and admins give nodes.
func ValidTag(t string) bool {
	rest, ok := strings.CutPrefix(t, "tag:")
	if !ok || rest == "" || len(t) > maxTagLen {
		return false
	}
	for _, r := range []byte(rest) {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// validNodeName reports whether s is an agent name: a DNS label of 1–63
// [a-z0-9-], not starting or ending with '-' (the coordinator's rule).
func validNodeName(s string) bool {
	if len(s) == 0 || len(s) > maxNodeName || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range []byte(s) {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// validWord is the rule for rule and group names.
func validWord(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for _, r := range []byte(s) {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// trimBOM drops a UTF-8 byte order mark some editors write.
func trimBOM(b []byte) []byte { return bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) }
