package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("coordinator", "coordinator --listen ADDR --data DIR [flags]",
		"Run the control plane: HTTPS API for enrollment and network maps, state in DIR/coord.db (bbolt).\n"+
			"On first start it makes a self-signed certificate, a map-signing key and DIR/admin.cred (0600),\n"+
			"which 'agentnet token create --admin' reads.", stderr)
	listen := fs.String("listen", "127.0.0.1:8443", "HTTPS listen address")
	data := fs.String("data", "", "state directory (required)")
	url := fs.String("url", "", "URL put into admin.cred and join tokens (default https://LISTEN); set it when clients dial another address")
	prefix := fs.String("prefix", wire.DefaultPrefix4.String(), "IPv4 prefix virtual addresses are allocated from")
	domain := fs.String("domain", wire.DefaultDomain, "DNS domain of agent names")
	tokenTTL := fs.Duration("token-ttl", 24*time.Hour, "default lifetime of join tokens")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9100 (default: off)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	auditReset := fs.Bool("audit-reset", false, "if DIR/audit.jsonl fails verification, rename it to audit.jsonl.broken-TIME and start a new log\n"+
		"(default: refuse to start and name the first bad record)")
	console := fs.Bool("console", false, "serve the web console at URL/console/ (log in with the secret in DIR/admin.cred)")
	enrollLimit := fs.String("rate-limit-enroll", coordinator.DefaultEnrollLimit.String(), "per-source limit on enrollments: RATE/BURST (requests per second, burst) or off")
	adminLimit := fs.String("rate-limit-admin", coordinator.DefaultAdminLimit.String(), "per-source limit on admin API requests: RATE/BURST or off")
	loginLimit := fs.String("rate-limit-login", coordinator.DefaultLoginLimit.String(), "per-source limit on console logins: RATE/BURST or off")
	connsPerSource := fs.Int("conn-limit-source", coordinator.DefaultConnsPerSource, "open connections per source address (IPv4, IPv6 /64); over it the source's oldest idle connection is closed, or the new one refused if none is idle (negative: no cap)")
	connsTotal := fs.Int("conn-limit-total", coordinator.DefaultConnsTotal, "open connections in all, handled like --conn-limit-source; keep it below the file-descriptor limit (negative: no cap)")
	var relayFiles listFlag
	fs.Var(&relayFiles, "relay", "relay.cred file written by 'agentnet relay' (repeatable); its relays go into every map with per-node credentials")
	if err := parseWithConfig(fs, args); err != nil {
		return err
	}
	var limits coordinator.RateLimits
	for _, l := range []struct {
		flag, v string
		dst     *coordinator.RateLimit
	}{{"rate-limit-enroll", *enrollLimit, &limits.Enroll}, {"rate-limit-admin", *adminLimit, &limits.Admin}, {"rate-limit-login", *loginLimit, &limits.Login}} {
		rl, err := coordinator.ParseRateLimit(l.v)
		if err != nil {
			return fmt.Errorf("%w: --%s: %v", errUsage, l.flag, err)
		}
		*l.dst = rl
	}
	if *data == "" {
		return fmt.Errorf("%w: --data DIR is required", errUsage)
	}
	p, err := netip.ParsePrefix(*prefix)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("%w: --prefix %q is not an IPv4 prefix", errUsage, *prefix)
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	var relays []turncred.Cred
	for _, f := range relayFiles {
		rc, err := turncred.LoadCred(f)
		if err != nil {
			return err
		}
		relays = append(relays, rc)
	}
	c, err := coordinator.New(coordinator.Config{
		DataDir: *data, Listen: *listen, URL: *url, Prefix4: p, Domain: *domain,
		DefaultTokenTTL: *tokenTTL, Logger: log, Console: *console,
		MetricsListen: *metricsListen, AuditReset: *auditReset, RateLimits: limits, Relays: relays,
		ConnLimits: coordinator.ConnLimits{PerSource: nonZero(*connsPerSource), Total: nonZero(*connsTotal)},
	})
	if err != nil {
		return err
	}
	log.Info("coordinator running", "url", c.URL(), "pin", c.Pin(), "admin", c.AdminCredPath())
	fmt.Fprintf(stdout, "coordinator at %s\nadmin credential: %s\ncreate a join token: agentnet token create --admin %s\n", c.URL(), c.AdminCredPath(), c.AdminCredPath())
	<-ctx.Done()
	log.Info("shutting down")
	return c.Close()
}

const tokenUsage = "Usage: agentnet token create --admin FILE [--tags tag:a,tag:b] [--reusable] [--ttl 1h] [--node-ttl 720h]\n" +
	"       agentnet token list --admin FILE [--json]\n" +
	"       agentnet token revoke ID --admin FILE"

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "list" || args[0] == "revoke") {
		return runTokenAdmin(ctx, args[0], args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "create" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stdout, tokenUsage)
			return nil
		}
		return fmt.Errorf("%w: %s", errUsage, tokenUsage)
	}
	fs := newFlags("token create", "token create --admin FILE [flags]",
		"Create a join token and print it (only the token, on stdout). The token alone lets a node join:\n"+
			"it carries the coordinator URL, its certificate pin and a secret. Keep it secret.", stderr)
	admin := fs.String("admin", "", "admin credential file written by the coordinator (required)")
	tags := fs.String("tags", "", "comma-separated tags for nodes joining with this token, e.g. tag:tools")
	reusable := fs.Bool("reusable", false, "allow the token to enrol many nodes (default: one use)")
	ttl := fs.Duration("ttl", 0, "token lifetime, e.g. 1h (default: the coordinator's --token-ttl)")
	nodeTTL := fs.Duration("node-ttl", 0, "identity lifetime of nodes enrolled with this token, e.g. 720h: after it the coordinator drops them and they must re-enroll (default: never expire)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *admin == "" {
		return fmt.Errorf("%w: --admin FILE is required", errUsage)
	}
	if *nodeTTL < 0 || (*nodeTTL > 0 && *nodeTTL < time.Second) {
		return fmt.Errorf("%w: --node-ttl %v: use a positive duration of at least 1s, or 0 for never", errUsage, *nodeTTL)
	}
	cred, err := wire.LoadAdminCred(*admin)
	if err != nil {
		return err
	}
	req := wire.CreateTokenRequest{Reusable: *reusable, TTLSeconds: int64(ttl.Seconds()), NodeTTLSeconds: int64(nodeTTL.Seconds())}
	for _, t := range splitList(*tags) {
		req.Tags = append(req.Tags, t)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := adminclient.New(cred).CreateToken(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.Token)
	return nil
}

// runTokenAdmin is 'agentnet token list' and 'agentnet token revoke ID'.
func runTokenAdmin(ctx context.Context, verb string, args []string, stdout, stderr io.Writer) error {
	help := "List join tokens (never their secrets): id, tags, reusable, uses, expiry, revoked."
	if verb == "revoke" {
		help = "Revoke join token ID (from 'agentnet token list'): later enrollments with it are refused.\n" +
			"Nodes it already enrolled keep working; cut one off with 'agentnet node revoke NAME'."
	}
	fs := newFlags("token "+verb, "token "+verb+map[string]string{"list": " --admin FILE [--json]", "revoke": " ID --admin FILE"}[verb], help, stderr)
	admin := fs.String("admin", "", "admin credential file written by the coordinator (required)")
	asJSON := fs.Bool("json", false, "print JSON (list)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *admin == "" {
		return fmt.Errorf("%w: --admin FILE is required", errUsage)
	}
	if verb == "revoke" && len(pos) != 1 || verb == "list" && len(pos) != 0 {
		return fmt.Errorf("%w: %s", errUsage, tokenUsage)
	}
	cred, err := wire.LoadAdminCred(*admin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ac := adminclient.New(cred)
	if verb == "revoke" {
		if err := ac.RevokeToken(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "token %s revoked: new enrollments with it are refused\n", pos[0])
		return nil
	}
	toks, err := ac.Tokens(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(toks)
	}
	fmt.Fprintf(stdout, "%-18s %-9s %-5s %-20s %-8s %s\n", "ID", "REUSABLE", "USES", "EXPIRES", "REVOKED", "TAGS")
	for _, t := range toks {
		fmt.Fprintf(stdout, "%-18s %-9v %-5d %-20s %-8v %s\n", t.ID, t.Reusable, t.Uses, t.Expires.Format(time.DateTime), t.Revoked, strings.Join(t.Tags, ","))
	}
	return nil
}

// nonZero maps a count flag's 0 to -1 (no cap): a zero ConnLimits field
// means "default", which is not what --conn-limit-source 0 says.
func nonZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
