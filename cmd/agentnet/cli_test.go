package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/agentnet/agentnet/wire"
)

// TestDemo runs the README's first command in-process.
func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"demo"}, &out, &errb); code != exitOK {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"planner", "search", "writer", "did:key:z6Mk", "HTTP 200", "demo ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	t.Log(out.String())
}

func TestHelpAndUsage(t *testing.T) {
	for _, c := range commands() {
		var out, errb bytes.Buffer
		args := []string{c.name, "--help"}
		if code := run(args, &out, &errb); code != exitOK {
			t.Errorf("%s --help: exit %d: %s", c.name, code, errb.String())
		}
		if !strings.Contains(out.String()+errb.String(), "Usage: agentnet "+c.name) {
			t.Errorf("%s --help lacks a usage line:\n%s%s", c.name, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errb); code != exitUsage {
		t.Errorf("unknown command: exit %d, want %d", code, exitUsage)
	}
	if code := run([]string{"node"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "--state") {
		t.Errorf("node without --state: exit %d, stderr %q", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "control protocol "+strconv.Itoa(wire.ProtocolVersion)) {
		t.Errorf("version: exit %d, %q", code, out.String())
	}
}

// proc is a started agentnet process whose stdout lines we can wait for.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = &testWriter{t: t, prefix: args[0] + ": "}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%s did not exit within 5s of SIGTERM", args[0])
		}
	})
	return p
}

func (p *proc) wait(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("process exited before printing %q", re)
			}
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %q", re)
		}
	}
}

type testWriter struct {
	t      *testing.T
	prefix string
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimSpace(string(p)))
	return len(p), nil
}

func agentnet(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("agentnet %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCLIWalkthrough runs the README's by-hand walkthrough with the built
// binary as separate processes, on 127.0.0.1.
func TestCLIWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped in -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "agentnet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	coord := start(t, bin, "coordinator", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "coord"))
	coord.wait(t, `^coordinator at https://`)
	admin := filepath.Join(dir, "coord", "admin.cred")
	if fi, err := os.Stat(admin); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.cred: %v %v", fi, err)
	}
	token := strings.TrimSpace(agentnet(t, bin, "token", "create", "--admin", admin, "--tags", "tag:tools", "--reusable", "--ttl", "1h"))
	if strings.Contains(token, "\n") || !strings.HasPrefix(token, "agentnet-join-v1.") {
		t.Fatalf("token create printed more than a token: %q", token)
	}
	search := start(t, bin, "node", "--token", token, "--name", "search", "--state", filepath.Join(dir, "search"), "--listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0")
	search.wait(t, `^node search up`)
	planner := start(t, bin, "node", "--token", token, "--name", "planner", "--state", filepath.Join(dir, "planner"), "--listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0")
	planner.wait(t, `^node planner up`)
	dnsAddr := planner.wait(t, `^dns on (\S+)`)[1]

	var st struct {
		Self  struct{ Name, IPv4 string }
		Peers []struct {
			Name, IPv4, DID string
			Online          bool
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := json.Unmarshal([]byte(agentnet(t, bin, "status", "--state", filepath.Join(dir, "planner"), "--json")), &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Peers) == 1 && st.Peers[0].Online || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.Self.Name != "planner" || len(st.Peers) != 1 || st.Peers[0].Name != "search" || !st.Peers[0].Online {
		t.Fatalf("status --json: %+v", st)
	}
	table := agentnet(t, bin, "status", "--state", filepath.Join(dir, "planner"))
	if !strings.Contains(table, "NAME") || !strings.Contains(table, "search") {
		t.Fatalf("status table:\n%s", table)
	}
	ping := agentnet(t, bin, "ping", "--state", filepath.Join(dir, "planner"), "--count", "2", "search")
	if !regexp.MustCompile(`pong from search \(100\.\S+\) via direct 127\.0\.0\.1:\d+ in [0-9.]+ ms`).MatchString(ping) {
		t.Fatalf("ping output:\n%s", ping)
	}
	q := new(dns.Msg)
	q.SetQuestion("search.agents.internal.", dns.TypeA)
	r, err := dns.Exchange(q, dnsAddr)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != st.Peers[0].IPv4 {
		t.Fatalf("dig search: %v %v, want %s", r, err, st.Peers[0].IPv4)
	}
	_ = io.Discard
}
