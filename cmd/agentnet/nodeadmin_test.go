package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/testnet"
)

// TestNodeRotateAndRevoke drives `agentnet node rotate` and `agentnet node
// revoke` in-process against a real coordinator and nodes.
func TestNodeRotateAndRevoke(t *testing.T) {
	nw := testnet.New(t)
	a, b := nw.StartNode("alpha"), nw.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	dirA := nw.NodeConfig("alpha").StateDir

	// $AGENTNET_CONFIG names the node's config file, as on a host set up
	// from deploy/: the verbs take their own keys from it (rotate: state)
	// and ignore the node's others (issue 16 item 8: "unknown key name").
	t.Setenv(configEnv, writeFile(t, "node.yaml", "name: alpha\nstate: "+dirA+"\nmtu: 1280\nlisten: 127.0.0.1:0\nforward: [127.0.0.1:0=bravo:80]\n"))
	var out, errb bytes.Buffer
	oldKey := a.Self().WGKey
	if code := run([]string{"node", "rotate", "--state", dirA}, &out, &errb); code != exitOK {
		t.Fatalf("node rotate: exit %d: %s", code, errb.String())
	}
	if !regexp.MustCompile(`^rotated WireGuard key [0-9a-f]{8} → [0-9a-f]{8}\n$`).MatchString(out.String()) || a.Self().WGKey == oldKey {
		t.Errorf("node rotate printed %q; key %s → %s", out.String(), oldKey, a.Self().WGKey)
	}
	out.Reset()
	midKey := a.Self().WGKey
	if code := run([]string{"node", "rotate"}, &out, &errb); code != exitOK || a.Self().WGKey == midKey {
		t.Fatalf("node rotate with --state from the node's config: exit %d: %s", code, errb.String())
	}

	out.Reset()
	errb.Reset()
	if code := run([]string{"node", "revoke", "alpha", "--admin", nw.Coord.AdminCredPath(), "--reason", "test"}, &out, &errb); code != exitOK {
		t.Fatalf("node revoke: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "revoked alpha") || !strings.Contains(out.String(), "3 WireGuard key(s)") {
		t.Errorf("node revoke printed %q", out.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.Refused() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	out.Reset()
	if code := run([]string{"status", "--state", dirA}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "REVOKED by an admin") {
		t.Errorf("status of a revoked node: exit %d:\n%s", code, out.String())
	}
	errb.Reset()
	if code := run([]string{"node", "revoke", "alpha", "--admin", nw.Coord.AdminCredPath()}, &out, &errb); code != exitFailure || !strings.Contains(errb.String(), "no node named") {
		t.Errorf("second revoke: exit %d: %s", code, errb.String())
	}
}

func TestNodeVerbUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"node", "revoke", "--help"}, exitOK, "Usage: agentnet node revoke NAME"},
		{[]string{"node", "rotate", "--help"}, exitOK, "Usage: agentnet node rotate"},
		{[]string{"node", "revoke", "--admin", "x"}, exitUsage, "usage: agentnet node revoke NAME"},
		{[]string{"node", "revoke", "alpha"}, exitUsage, "--admin FILE is required"},
		{[]string{"node", "rotate"}, exitUsage, "usage: agentnet node rotate --state DIR"},
		{[]string{"node", "rotate", "--state", t.TempDir()}, exitFailure, "no node running"},
		{[]string{"node", "--key-rotation", "-1h", "--state", t.TempDir()}, exitUsage, "--key-rotation"},
		{[]string{"token", "create", "--admin", "x", "--node-ttl", "-1h"}, exitUsage, "--node-ttl"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s%s", tc.args, code, tc.code, tc.want, out.String(), errb.String())
		}
	}
}
