package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
)

// TestTokenListRevoke: 'token list' shows a token created with 'token
// create' (never its secret), 'token revoke ID' revokes it, and a node
// can then not enroll with it.
func TestTokenListRevoke(t *testing.T) {
	dir := t.TempDir()
	c, err := coordinator.New(coordinator.Config{DataDir: filepath.Join(dir, "coord"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	admin := c.AdminCredPath()

	code, out, errs := runCLI("token", "create", "--admin", admin, "--tags", "tag:ci", "--reusable")
	if code != exitOK {
		t.Fatalf("token create: exit %d %s", code, errs)
	}
	token := strings.TrimSpace(out)
	tok, err := wire.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}

	code, out, errs = runCLI("token", "list", "--admin", admin, "--json")
	var list []wire.TokenInfo
	if code != exitOK || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != tok.ID || !list[0].Reusable || list[0].Revoked {
		t.Fatalf("token list --json: exit %d %q %s", code, out, errs)
	}
	if strings.Contains(out, tok.Secret) {
		t.Fatal("token list printed the secret")
	}
	code, out, _ = runCLI("token", "list", "--admin", admin)
	if code != exitOK || !strings.Contains(out, tok.ID) || !strings.Contains(out, "tag:ci") {
		t.Fatalf("token list: exit %d\n%s", code, out)
	}

	code, out, errs = runCLI("token", "revoke", tok.ID, "--admin", admin)
	if code != exitOK || !strings.Contains(out, "revoked") {
		t.Fatalf("token revoke: exit %d %s %s", code, out, errs)
	}
	if code, _, errs := runCLI("token", "revoke", "nosuchtoken", "--admin", admin); code != exitFailure || !strings.Contains(errs, "no join token") {
		t.Fatalf("revoke unknown: exit %d %s", code, errs)
	}
	for _, args := range [][]string{{"token", "revoke", "--admin", admin}, {"token", "list"}, {"token", "frob"}} {
		if code, _, _ := runCLI(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want usage", args, code)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = overlay.New(ctx, overlay.Config{StateDir: filepath.Join(dir, "n"), Token: token, Name: "late", EnrollTimeout: 2 * time.Second})
	var ce *overlay.ControlError
	if err == nil || !errors.As(err, &ce) || ce.Resp.Code != "token_revoked" {
		t.Fatalf("enroll with a revoked token: %v, want refusal token_revoked", err)
	}
}
