package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/logtest"
)

// buildAgentnet builds the binary into dir for tests that run it as
// separate processes.
func buildAgentnet(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "agentnet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runExit runs the binary to completion and returns its exit code and
// combined output.
func runExit(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("agentnet %s: %v\n%s", strings.Join(args, " "), err, out)
	return -1, ""
}

// TestCLINodeLifecycle runs real processes for issue 16 items 6, 4 and 3:
// bad flags fail before any side effect; a second node on a state dir
// fails fast and leaves the first alone; a revoked node exits non-zero.
func TestCLINodeLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped in -short")
	}
	t.Setenv(configEnv, "")
	t.Setenv("AGENTNET_TOKEN", "")
	dir := t.TempDir()
	bin := buildAgentnet(t, dir)
	coord := start(t, bin, "coordinator", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "coord"))
	coord.wait(t, `^coordinator at https://`)
	admin := filepath.Join(dir, "coord", "admin.cred")
	token := strings.TrimSpace(agentnet(t, bin, "token", "create", "--admin", admin, "--reusable", "--ttl", "1h"))

	// Item 6: every flag is checked before the state dir exists or the
	// coordinator hears of the node.
	ghost := filepath.Join(dir, "ghost")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mtu", "100", "--token", token}, "MTU 100"},
		{[]string{"--token", "agentnet-join-v1.garbage"}, "join token"},
		{[]string{"--token", token, "--dns-upstream", "resolver:53"}, "--dns-upstream"},
		{[]string{"--token", token, "--accept-dns"}, "--accept-dns"},
	} {
		args := append([]string{"node", "--name", "ghost", "--state", ghost, "--listen", "127.0.0.1:0"}, tc.args...)
		code, out := runExit(t, bin, args...)
		if code != exitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want %d naming %q:\n%s", tc.args, code, exitUsage, tc.want, out)
		}
		if _, err := os.Stat(ghost); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%v: state dir left behind: %v", tc.args, err)
		}
	}

	// The name was not taken by the failed runs: a good run enrols it.
	alphaDir := filepath.Join(dir, "alpha")
	alpha := startCapture(t, bin, "node", "--token", token, "--name", "ghost", "--state", alphaDir, "--listen", "127.0.0.1:0")
	alpha.wait(t, `^node ghost up`)

	// Item 4: a second node on the same state dir fails at once, names
	// the first one's PID and leaves its socket alone.
	code, out := runExit(t, bin, "node", "--state", alphaDir, "--listen", "127.0.0.1:0")
	if want := "is in use by process " + strconv.Itoa(alpha.cmd.Process.Pid); code != exitFailure || !strings.Contains(out, want) {
		t.Errorf("second node on one state dir: exit %d, want %d with %q:\n%s", code, exitFailure, want, out)
	}
	if st := agentnet(t, bin, "status", "--state", alphaDir); !strings.Contains(st, "ghost") {
		t.Errorf("status of the first node after the second failed:\n%s", st)
	}

	// Item 3: revoked, the node stops on its own with a clear message.
	agentnet(t, bin, "node", "revoke", "ghost", "--admin", admin, "--reason", "test")
	select {
	case err := <-alpha.exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
			t.Errorf("revoked node exited with %v, want exit %d", err, exitFailure)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("revoked node still running after 20s")
	}
	if s := alpha.stderr.String(); !strings.Contains(s, "agentnet node: overlay: stopped: node revoked by the coordinator") || !strings.Contains(s, "NEWDIR") {
		t.Errorf("revoked node's last words:\n%s", s)
	}
	if _, err := os.Stat(filepath.Join(alphaDir, "agentnet.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("local API socket left behind: %v", err)
	}
	// It never starts again from that state.
	if code, out := runExit(t, bin, "node", "--state", alphaDir, "--listen", "127.0.0.1:0"); code != exitFailure || !strings.Contains(out, "refused for good") {
		t.Errorf("restart of the revoked node: exit %d:\n%s", code, out)
	}
}

// captured is a started process whose stderr is kept and whose exit is
// reported on exited.
type captured struct {
	*proc
	stderr *logtest.Buffer
	exited chan error
}

func startCapture(t *testing.T, bin string, args ...string) *captured {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, _ := cmd.StdoutPipe()
	c := &captured{stderr: new(logtest.Buffer), exited: make(chan error, 1)}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.proc = &proc{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.proc.lines <- sc.Text()
		}
		close(c.proc.lines)
	}()
	done := make(chan struct{})
	go func() {
		c.exited <- cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		t.Logf("%s stderr:\n%s", args[0], c.stderr.String())
	})
	return c
}
