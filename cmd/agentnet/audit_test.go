package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/internal/logtest"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func startTestCoordinator(t *testing.T, dir string) *coordinator.Coordinator {
	t.Helper()
	c, err := coordinator.New(coordinator.Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func createToken(t *testing.T, c *coordinator.Coordinator) {
	t.Helper()
	if _, err := adminclient.New(c.AdminCred()).CreateToken(context.Background(), wire.CreateTokenRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestAuditVerifyExitCodes(t *testing.T) {
	dir := t.TempDir()
	c := startTestCoordinator(t, dir)
	createToken(t, c)
	createToken(t, c)
	c.Close()

	var out, errb bytes.Buffer
	if code := run([]string{"audit", "verify", "--data", dir}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "intact: 3 records, 1 checkpoints") {
		t.Fatalf("verify intact log: exit %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"audit", "verify", "--data", dir, "--json"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), `"intact": true`) {
		t.Fatalf("verify --json: exit %d\n%s", code, out.String())
	}

	// Edit the second record.
	path := audit.Path(dir)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines[1] = strings.Replace(lines[1], `"reusable":false`, `"reusable":true`, 1)
	os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600)
	out.Reset()
	errb.Reset()
	code := run([]string{"audit", "verify", "--data", dir}, &out, &errb)
	if code != exitFailure || !strings.Contains(out.String(), "BROKEN at line 2 (seq 2): edited") || !strings.Contains(errb.String(), "line 2 (seq 2)") {
		t.Fatalf("verify edited log: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	// A wrong key (another coordinator's) fails on the checkpoint.
	other := startTestCoordinator(t, t.TempDir())
	lines[1] = strings.Replace(lines[1], `"reusable":true`, `"reusable":false`, 1)
	os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600)
	out.Reset()
	key := other.PublicKey()
	if code := run([]string{"audit", "verify", "--data", dir, "--key", b64(key)}, &out, &errb); code != exitFailure || !strings.Contains(out.String(), "bad_checkpoint_signature") {
		t.Fatalf("verify with another key: exit %d\n%s", code, out.String())
	}
	// Usage errors.
	if code := run([]string{"audit", "verify"}, &out, &errb); code != exitUsage {
		t.Errorf("verify without --data: exit %d", code)
	}
	if code := run([]string{"audit", "frob"}, &out, &errb); code != exitUsage {
		t.Errorf("audit frob: exit %d", code)
	}
	if code := run([]string{"audit", "verify", "--data", t.TempDir()}, &out, &errb); code != exitFailure {
		t.Errorf("verify of a dir without a coordinator: exit %d", code)
	}
}

func TestAuditTail(t *testing.T) {
	dir := t.TempDir()
	c := startTestCoordinator(t, dir)
	createToken(t, c)
	var out, errb bytes.Buffer
	if code := run([]string{"audit", "tail", "--admin", c.AdminCredPath(), "-n", "5"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "token_create") || !strings.Contains(out.String(), "actor=admin") {
		t.Fatalf("tail: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if code := run([]string{"audit", "tail", "--admin", c.AdminCredPath(), "-n", "0"}, &out, &errb); code != exitUsage {
		t.Errorf("tail -n 0: exit %d", code)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fout, ferr logtest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- runAudit(ctx, []string{"tail", "--admin", c.AdminCredPath(), "--follow", "--json"}, &fout, &ferr)
	}()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	printed := func(s string) func(string) bool { return func(out string) bool { return strings.Contains(out, s) } }
	if err := fout.Wait(wctx, printed(`"seq":1,`)); err != nil {
		t.Fatalf("tail --follow printed no record 1: %v\n%s%s", err, fout.String(), ferr.String())
	}
	createToken(t, c)
	if err := fout.Wait(wctx, printed(`"seq":2,`)); err != nil {
		t.Fatalf("tail --follow printed no record 2 after it was written: %v\n%s%s", err, fout.String(), ferr.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("tail --follow: %v", err)
	}
	if got := strings.Count(fout.String(), "\n"); got != 2 || !strings.Contains(fout.String(), `"seq":2,`) {
		t.Errorf("tail --follow printed %d lines:\n%s%s", got, fout.String(), ferr.String())
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
