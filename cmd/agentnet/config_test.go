package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// testFlags is a FlagSet with one flag of each kind the commands use.
type testFlags struct {
	listen  *string
	verbose *bool
	ttl     *time.Duration
	mtu     *int
	forward listFlag
}

func newTestFlags() (*flag.FlagSet, *testFlags) {
	fs := newFlags("test", "test", "a test command", io.Discard)
	var v testFlags
	v.listen = fs.String("listen", "127.0.0.1:8443", "")
	v.verbose = fs.Bool("verbose", false, "")
	v.ttl = fs.Duration("ttl", time.Hour, "")
	v.mtu = fs.Int("mtu", 1280, "")
	fs.Var(&v.forward, "forward", "")
	return fs, &v
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigLoader(t *testing.T) {
	t.Setenv(configEnv, "")
	type want struct {
		listen  string
		verbose bool
		ttl     time.Duration
		mtu     int
		forward []string
	}
	defaults := want{listen: "127.0.0.1:8443", ttl: time.Hour, mtu: 1280}
	for _, tc := range []struct {
		name    string
		yaml    string // "" with noFile: no --config
		noFile  bool
		args    []string
		want    want
		wantErr string // regexp; the error is then a usage error
	}{
		{name: "no config", noFile: true, want: defaults},
		{name: "empty file", yaml: "# nothing\n", want: defaults},
		{name: "good file",
			yaml: "listen: 0.0.0.0:9000\nverbose: true\nttl: 90m\nmtu: 1400\nforward: [a=b:1, c=d:2]\n",
			want: want{listen: "0.0.0.0:9000", verbose: true, ttl: 90 * time.Minute, mtu: 1400, forward: []string{"a=b:1", "c=d:2"}}},
		{name: "block list", yaml: "forward:\n  - a=b:1\n  - c=d:2\n",
			want: want{listen: defaults.listen, ttl: time.Hour, mtu: 1280, forward: []string{"a=b:1", "c=d:2"}}},
		{name: "single value for repeatable flag", yaml: "forward: a=b:1\n",
			want: want{listen: defaults.listen, ttl: time.Hour, mtu: 1280, forward: []string{"a=b:1"}}},
		{name: "bool false", yaml: "verbose: false\n", want: defaults},
		{name: "flag wins over file", yaml: "listen: 0.0.0.0:9000\nmtu: 1400\n", args: []string{"--listen", "10.0.0.1:1"},
			want: want{listen: "10.0.0.1:1", ttl: time.Hour, mtu: 1400}},
		{name: "flag wins over file list", yaml: "forward: [a=b:1, c=d:2]\n", args: []string{"--forward", "x=y:3"},
			want: want{listen: defaults.listen, ttl: time.Hour, mtu: 1280, forward: []string{"x=y:3"}}},
		{name: "unknown key", yaml: "listen: 0.0.0.0:9000\nlisten-addr: x\n",
			wantErr: `cfg\.yaml:2: unknown key "listen-addr"; valid keys: forward, listen, mtu, ttl, verbose$`},
		{name: "config key", yaml: "config: other.yaml\n", wantErr: `unknown key "config"`},
		{name: "bad bool", yaml: "verbose: maybe\n", wantErr: `cfg\.yaml: key "verbose": invalid value "maybe" \(want true or false\): parse error$`},
		{name: "bad duration", yaml: "ttl: 5\n", wantErr: `cfg\.yaml: key "ttl": invalid value "5" \(type duration\): parse error$`},
		{name: "bad int", yaml: "mtu: big\n", wantErr: `cfg\.yaml: key "mtu": invalid value "big" \(type int\): parse error$`},
		{name: "list for single flag", yaml: "listen: [a, b]\n", wantErr: `cfg\.yaml:1: key "listen" takes one value, not a list`},
		{name: "null value", yaml: "listen:\n", wantErr: `line 1: key "listen" has no value`},
		{name: "non-mapping list", yaml: "- listen\n- mtu\n", wantErr: `cfg\.yaml: line 1: want a mapping .* got a list`},
		{name: "non-mapping scalar", yaml: "listen 0.0.0.0:9000\n", wantErr: `line 1: want a mapping .* got the value`},
		{name: "nested mapping", yaml: "mtu: 1400\nlisten:\n  host: 0.0.0.0\n  port: 9000\n",
			wantErr: `cfg\.yaml: line 3: key "listen": want a value or a list of values, got a mapping`},
		{name: "nested in list", yaml: "forward:\n  - {a: b}\n", wantErr: `line 2: key "forward": list elements must be plain values, got a mapping`},
		{name: "repeated key", yaml: "mtu: 1\nmtu: 2\n", wantErr: `line 2: key "mtu" repeated \(first on line 1\)`},
		{name: "syntax error", yaml: "listen: [a\n", wantErr: `cfg\.yaml: yaml: line \d+:`},
		{name: "missing file", noFile: true, args: []string{"--config", "/nonexistent/agentnet.yaml"},
			wantErr: `--config: open /nonexistent/agentnet.yaml: no such file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, v := newTestFlags()
			args := tc.args
			if !tc.noFile {
				args = append([]string{"--config", writeFile(t, "cfg.yaml", tc.yaml)}, args...)
			}
			err := parseWithConfig(fs, args)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, errUsage) || !regexp.MustCompile(tc.wantErr).MatchString(err.Error()) {
					t.Fatalf("err = %v, want usage error matching %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{*v.listen, *v.verbose, *v.ttl, *v.mtu, v.forward}
			if got.listen != tc.want.listen || got.verbose != tc.want.verbose || got.ttl != tc.want.ttl ||
				got.mtu != tc.want.mtu || !slices.Equal(got.forward, tc.want.forward) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestConfigEnv(t *testing.T) {
	t.Setenv(configEnv, writeFile(t, "env.yaml", "mtu: 1400\n"))
	fs, v := newTestFlags()
	if err := parseWithConfig(fs, nil); err != nil || *v.mtu != 1400 {
		t.Fatalf("$%s: err %v, mtu %d", configEnv, err, *v.mtu)
	}
	fs, v = newTestFlags()
	if err := parseWithConfig(fs, []string{"--config", writeFile(t, "flag.yaml", "mtu: 1500\n")}); err != nil || *v.mtu != 1500 {
		t.Fatalf("--config over $%s: err %v, mtu %d", configEnv, err, *v.mtu)
	}
}

// TestConfigHelp: --config is in the --help of the commands that take it.
func TestConfigHelp(t *testing.T) {
	for _, c := range []string{"coordinator", "node"} {
		var out, errb bytes.Buffer
		if code := run([]string{c, "--help"}, &out, &errb); code != exitOK || !strings.Contains(errb.String(), "-config string") {
			t.Errorf("%s --help: exit %d, lacks --config:\n%s", c, code, errb.String())
		}
	}
}

// TestConfigCommandErrors: config errors from the real commands exit 2 and
// name the file and key.
func TestConfigCommandErrors(t *testing.T) {
	t.Setenv(configEnv, "")
	for _, tc := range []struct{ cmd, yaml, want string }{
		{"coordinator", "data: /tmp/x\nstate: /tmp/y\n", `:2: unknown key "state"; valid keys: `},
		{"coordinator", "token-ttl: forever\n", `key "token-ttl": invalid value "forever" (type duration)`},
		{"node", "state: /tmp/x\nsocks5-allow-outside: perhaps\n", `key "socks5-allow-outside": invalid value "perhaps" (want true or false)`},
		{"node", "forward:\n  local: 127.0.0.1:9000\n", `line 2: key "forward": want a value or a list of values, got a mapping`},
	} {
		f := writeFile(t, tc.cmd+".yaml", tc.yaml)
		var out, errb bytes.Buffer
		code := run([]string{tc.cmd, "--config", f}, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), f) || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%s with %q: exit %d, stderr %q; want exit 2 naming %s and %q", tc.cmd, tc.yaml, code, errb.String(), f, tc.want)
		}
		if _, keys, ok := strings.Cut(strings.TrimSpace(errb.String()), "valid keys: "); ok {
			// Every flag but config, in order; flags added later appear by themselves.
			if ks := strings.Split(keys, ", "); !slices.IsSorted(ks) || !slices.Contains(ks, "data") ||
				!slices.Contains(ks, "token-ttl") || slices.Contains(ks, "config") {
				t.Errorf("valid keys: %q", keys)
			}
		}
	}
}

// TestDeployConfigs loads every deploy/*.yaml into the real FlagSet of its
// command (coordinator*.yaml, node*.yaml). The command is run with an
// invalid --log-level on the command line: it then stops with that usage
// error after the file was applied and the command's own checks (--data or
// --state required, --listen and --prefix syntax) passed, and before it
// starts anything. Any other error is the file's.
func TestDeployConfigs(t *testing.T) {
	t.Setenv(configEnv, "")
	t.Setenv("AGENTNET_TOKEN", "")
	files, err := filepath.Glob("../../deploy/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("deploy/*.yaml: %v %v", files, err)
	}
	for _, f := range files {
		cmd, _, _ := strings.Cut(strings.TrimSuffix(filepath.Base(f), ".yaml"), "-")
		t.Run(filepath.Base(f), func(t *testing.T) {
			if cmd != "coordinator" && cmd != "node" {
				t.Skipf("no %s command yet", cmd)
			}
			var out, errb bytes.Buffer
			code := run([]string{cmd, "--config", f, "--log-level", "invalid"}, &out, &errb)
			if code != exitUsage || !strings.Contains(errb.String(), `--log-level "invalid"`) {
				t.Fatalf("exit %d, stderr:\n%s\nwant only the --log-level usage error", code, errb.String())
			}
			// And the file alone is well-formed for the loader.
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if s, err := parseConfig(b); err != nil || len(s) == 0 {
				t.Fatalf("parseConfig: %v, %d settings", err, len(s))
			}
		})
	}
}

// TestConfigE2E starts the built binary as a coordinator and two nodes
// configured only by --config files, and checks ping --json (one object per
// reply with exactly peer, ip, rtt_ms, path, endpoint).
func TestConfigE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped in -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "agentnet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "coord")
	cfg := writeFile(t, "coordinator.yaml", "listen: 127.0.0.1:0\ndata: "+data+"\ntoken-ttl: 2h\nlog-level: warn\n")
	coord := start(t, bin, "coordinator", "--config", cfg)
	coord.wait(t, `^coordinator at https://127\.0\.0\.1:\d+`)
	admin := filepath.Join(data, "admin.cred")
	if _, err := os.Stat(admin); err != nil {
		t.Fatalf("data dir from the config file not used: %v", err)
	}

	// Two netstack nodes configured by file only, then ping --json.
	token := strings.TrimSpace(agentnet(t, bin, "token", "create", "--admin", admin, "--reusable"))
	for _, name := range []string{"search", "planner"} {
		cfg := writeFile(t, name+".yaml", "state: "+filepath.Join(dir, name)+"\ntoken: "+token+"\nname: "+name+
			"\nlisten: 127.0.0.1:0\ndns-listen: 127.0.0.1:0\nlog-level: warn\n")
		start(t, bin, "node", "--config", cfg).wait(t, `^node `+name+` up`)
	}
	out := agentnet(t, bin, "ping", "--state", filepath.Join(dir, "planner"), "--count", "2", "--json", "search")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("ping --json: want 2 lines:\n%s", out)
	}
	for _, l := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("ping --json line %q: %v", l, err)
		}
		if r["peer"] != "search" || !strings.HasPrefix(r["ip"].(string), "100.") || r["path"] != "direct" ||
			!strings.HasPrefix(r["endpoint"].(string), "127.0.0.1:") || r["rtt_ms"].(float64) <= 0 || len(r) != 5 {
			t.Errorf("ping --json line: %s", l)
		}
	}
}

func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob("../../deploy/systemd/*.service")
	if err != nil || len(units) != 3 {
		t.Fatalf("deploy/systemd/*.service: %v %v", units, err)
	}
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		keys := unitKeys(string(b))
		name := filepath.Base(u)
		for _, s := range []string{"[Unit]", "[Service]", "[Install]"} {
			if !strings.Contains(string(b), "\n"+s+"\n") {
				t.Errorf("%s: no %s section", name, s)
			}
		}
		cmd := strings.TrimSuffix(strings.TrimPrefix(name, "agentnet-"), ".service")
		if want := "/usr/local/bin/agentnet " + cmd + " --config /etc/agentnet/" + cmd + ".yaml"; keys["ExecStart"] != want {
			t.Errorf("%s: ExecStart=%q, want %q", name, keys["ExecStart"], want)
		}
		if u := keys["User"]; u == "" || u == "root" || u == "0" {
			t.Errorf("%s: User=%q, want a dedicated user", name, u)
		}
		for k, v := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
			"PrivateTmp": "yes", "StateDirectory": "agentnet", "ReadWritePaths": "/var/lib/agentnet", "Restart": "on-failure"} {
			if keys[k] != v {
				t.Errorf("%s: %s=%q, want %q", name, k, keys[k], v)
			}
		}
		if cmd == "node" {
			for k, v := range map[string]string{"AmbientCapabilities": "CAP_NET_ADMIN CAP_NET_RAW",
				"CapabilityBoundingSet": "CAP_NET_ADMIN CAP_NET_RAW", "DeviceAllow": "/dev/net/tun rw"} {
				if keys[k] != v {
					t.Errorf("%s: %s=%q, want %q", name, k, keys[k], v)
				}
			}
		} else if keys["AmbientCapabilities"] != "" || keys["CapabilityBoundingSet"] != "" {
			t.Errorf("%s: needs no capabilities, has %q / %q", name, keys["AmbientCapabilities"], keys["CapabilityBoundingSet"])
		}
	}
}

// unitKeys is the last value of each Key= line of a unit file.
func unitKeys(s string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(l, "#") {
			m[k] = v
		}
	}
	return m
}

// TestSystemdVerify runs systemd-analyze verify on the units, with
// ExecStart pointed at an executable that exists here.
func TestSystemdVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze")
	}
	units, _ := filepath.Glob("../../deploy/systemd/*.service")
	dir := t.TempDir()
	var args []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte("/usr/local/bin/agentnet"), []byte(os.Args[0])), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, args...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
