// Command agentnet is the single agentnet binary: coordinator, node, relay
// and the CLI that talks to them. Each subcommand maps its flags onto a
// Config of the package that does the work and nothing more.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/agentnet/agentnet/netstack"
	"github.com/agentnet/agentnet/wire"
)

// Exit codes, documented in the README.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // bad flags or arguments
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"coordinator", "run the control plane (enrollment, addresses, network maps)", runCoordinator},
		{"token", "create join tokens: agentnet token create --admin FILE", runToken},
		{"audit", "verify or tail the coordinator's tamper-evident audit log", runAudit},
		{"node", "run a node: join with a token, carry agent traffic, answer DNS", runNode},
		{"policy", "set, get or check the access policy: agentnet policy set FILE --admin FILE", runPolicy},
		{"why", "explain a policy decision: agentnet why FROM TO:PORT --admin FILE", runWhy},
		{"status", "show a running node, its peers and their paths", runStatus},
		{"ping", "ping a peer through the tunnel: agentnet ping --state DIR NAME", runPing},
		{"relay", "run a TURN/STUN relay for nodes without a direct path", runRelay},
		{"netcheck", "check UDP, NAT type and relay reachability: agentnet netcheck --state DIR", runNetcheck},
		{"demo", "start a coordinator, a relay and three agents in this process and let them talk", runDemo},
		{"version", "print build and control-protocol versions", runVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "agentnet: a WireGuard overlay network for AI agents.\n\nUsage: agentnet COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'agentnet COMMAND --help' for a command's flags.\nExit codes: 0 success, 1 failure, 2 usage error.\n")
}

// errUsage marks errors that should exit with exitUsage.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "agentnet %s: %v\n", c.name, err)
			return exitUsage
		default:
			fmt.Fprintf(stderr, "agentnet %s: %v\n", c.name, err)
			return exitFailure
		}
	}
	fmt.Fprintf(stderr, "agentnet: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

// newFlags makes a FlagSet whose --help prints the summary, usage line and
// flags.
func newFlags(name, usageLine, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: agentnet %s\n\n%s\n\nFlags:\n", usageLine, about)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; a parse error is a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// newLogger makes the process logger; gVisor's own logs go to it too.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: use debug, info, warn or error", errUsage, level)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
	netstack.RouteGVisorLogs(log)
	return log, nil
}

func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" {
		v = strings.TrimSpace(v + " " + rev[:min(12, len(rev))] + dirty)
	}
	return v
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version", "Print the build version and the control-protocol versions this build speaks.", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "agentnet %s\ncontrol protocol %d (accepts %d..%d)\n", buildVersion(), wire.ProtocolVersion, wire.MinProtocolVersion, wire.ProtocolVersion)
	return nil
}
