package main

// Config files for the long-running commands (coordinator, node and, when it
// arrives, relay). A config file is a YAML mapping whose keys are exactly the
// command's long flag names; the loader knows nothing about any command, it
// walks the FlagSet, so a flag added to a command is a config key with no
// further code. See docs/CONFIG.md.

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// configEnv names a config file when --config is not given.
const configEnv = "AGENTNET_CONFIG"

// parseWithConfig is parse for commands that take --config FILE: it adds the
// --config flag, parses args and then fills every flag not set on the
// command line from the file (flags win). Errors in the file are usage
// errors.
func parseWithConfig(fs *flag.FlagSet, args []string) error {
	return parseConfigured(fs, args, false)
}

// parseWithSharedConfig is parseWithConfig for the sub-verbs of a command
// (agentnet node rotate, node revoke): the config file is the command's
// (a node's, typically from $AGENTNET_CONFIG), so the verb takes the keys
// it has flags for (rotate: state) and ignores the rest (issue 16 item 8).
func parseWithSharedConfig(fs *flag.FlagSet, args []string) error {
	return parseConfigured(fs, args, true)
}

func parseConfigured(fs *flag.FlagSet, args []string, shared bool) error {
	file := fs.String("config", "", "YAML file of flag settings: keys are the long flag names, flags on the command line win (also $"+configEnv+")")
	if shared {
		fs.Lookup("config").Usage = "YAML config file of the command (e.g. the node's): the keys this verb has flags for are used, others ignored; flags on the command line win (also $" + configEnv + ")"
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		*file = os.Getenv(configEnv)
	}
	if *file == "" {
		return nil
	}
	return loadConfig(fs, *file, shared)
}

// loadConfig applies the YAML mapping in file to fs: each key must name a
// flag of fs (unless shared: then keys fs lacks are skipped); flags already
// set (fs.Visit) are left alone; a list sets a repeatable flag once per
// element.
func loadConfig(fs *flag.FlagSet, file string, shared bool) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%w: --config: %v", errUsage, err)
	}
	settings, err := parseConfig(b)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errUsage, file, err)
	}
	set := map[string]bool{"config": true} // a config file cannot name another
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, s := range settings {
		f := fs.Lookup(s.key)
		if shared && f == nil {
			continue
		}
		if f == nil || s.key == "config" {
			return fmt.Errorf("%w: %s:%d: unknown key %q; valid keys: %s", errUsage, file, s.line, s.key, strings.Join(configKeys(fs), ", "))
		}
		if set[s.key] {
			continue
		}
		if s.list && !isRepeatable(f.Value) {
			return fmt.Errorf("%w: %s:%d: key %q takes one value, not a list", errUsage, file, s.line, s.key)
		}
		for _, v := range s.values {
			if err := fs.Set(s.key, v); err != nil {
				return fmt.Errorf("%w: %s: key %q: invalid value %q%s: %v", errUsage, file, s.key, v, wantType(f), err)
			}
		}
	}
	return nil
}

// setting is one key of a config file with its values as flag strings.
type setting struct {
	key    string
	values []string
	list   bool // the YAML value was a sequence
	line   int
}

// parseConfig reads a YAML document that is a mapping from flag names to
// scalars or sequences of scalars. An empty document is no settings.
func parseConfig(b []byte) ([]setting, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 { // empty file or only comments
		return nil, nil
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of flag names to values (key: value), got %s", root.Line, kindName(root))
	}
	var out []setting
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: a key must be a flag name, got %s", k.Line, kindName(k))
		}
		if prev, ok := seen[k.Value]; ok {
			return nil, fmt.Errorf("line %d: key %q repeated (first on line %d)", k.Line, k.Value, prev)
		}
		seen[k.Value] = k.Line
		s := setting{key: k.Value, line: k.Line}
		switch v.Kind {
		case yaml.ScalarNode:
			if v.Tag == "!!null" {
				return nil, fmt.Errorf("line %d: key %q has no value", v.Line, k.Value)
			}
			s.values = []string{v.Value}
		case yaml.SequenceNode:
			s.list = true
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode || e.Tag == "!!null" {
					return nil, fmt.Errorf("line %d: key %q: list elements must be plain values, got %s", e.Line, k.Value, kindName(e))
				}
				s.values = append(s.values, e.Value)
			}
		default:
			return nil, fmt.Errorf("line %d: key %q: want a value or a list of values, got %s (config files are flat: keys are flag names)", v.Line, k.Value, kindName(v))
		}
		out = append(out, s)
	}
	return out, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "a document"
}

// wantType names the kind of value f takes, for errors: " (type duration)".
func wantType(f *flag.Flag) string {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return " (want true or false)"
	}
	if name, _ := flag.UnquoteUsage(f); name != "" && name != "value" {
		return " (type " + name + ")"
	}
	return ""
}

// configKeys lists the flags a config file of fs may set.
func configKeys(fs *flag.FlagSet) []string {
	var keys []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" {
			keys = append(keys, f.Name)
		}
	})
	slices.Sort(keys)
	return keys
}

// repeatable is implemented by flag values that accumulate one value per
// Set, such as listFlag; only they accept a YAML list.
type repeatable interface{ repeatable() }

func (*listFlag) repeatable() {}

func isRepeatable(v flag.Value) bool {
	_, ok := v.(repeatable)
	return ok
}
