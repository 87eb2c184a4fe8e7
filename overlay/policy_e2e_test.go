package overlay_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/logtest"
	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// TestPolicyEndToEnd: a policy set on the real coordinator is compiled into
// every node's signed map and enforced by the nodes themselves. planner may
// open tcp:8080 on search and nothing else: that port works, another port
// on the same peer fails at once (RST from planner's own filter) and is
// counted and logged with the policy version, search cannot open anything
// on planner, and writer (in no rule) is absent from planner's map and DNS.
func TestPolicyEndToEnd(t *testing.T) {
	n := testnet.New(t)
	logs := &logtest.Buffer{}
	pcfg := n.NodeConfig("planner")
	pcfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	planner := n.StartNodeConfig(pcfg)
	search := n.StartNode("search")
	writer := n.StartNode("writer")
	testnet.WaitPeers(t, planner, search, writer)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := adminclient.New(n.Coord.AdminCred())
	const doc = `
rules:
  - name: planner-to-search
    from: [planner]
    to: [search]
    ports: [tcp:8080]
tests:
  - {from: planner, to: "search:8080", expect: allow}
  - {from: planner, to: "search:9090", expect: deny}
  - {from: search, to: "planner:8080", expect: deny}
`
	set, err := admin.SetPolicy(ctx, wire.PolicySetRequest{Text: doc})
	if err != nil {
		t.Fatalf("set policy: %v", err)
	}
	version := set.Version

	// Every node applies a map with the new policy version.
	for _, nd := range []interface {
		WaitMap(context.Context, func(*wire.Map) bool) (*wire.Map, error)
	}{planner, search, writer} {
		if _, err := nd.WaitMap(ctx, func(m *wire.Map) bool {
			return m.Filter != nil && m.Filter.PolicyVersion == version
		}); err != nil {
			t.Fatalf("map with policy v%d not applied: %v", version, err)
		}
	}
	if _, ok := planner.Map().Peer("writer"); ok {
		t.Error("writer is in planner's map although no rule connects them")
	}
	if _, err := planner.Resolver().LookupHost(ctx, "writer.agents.internal"); err == nil {
		t.Error("writer.agents.internal still resolves on planner")
	}
	if _, ok := planner.Map().Peer("search"); !ok {
		t.Fatal("search missing from planner's map")
	}

	ln8080, err := search.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln8080.Close()
	ln9090, err := search.Listen("tcp", ":9090")
	if err != nil {
		t.Fatal(err)
	}
	defer ln9090.Close()
	var accepted9090 atomic.Int32
	go func() {
		for {
			c, err := ln9090.Accept()
			if err != nil {
				return
			}
			accepted9090.Add(1)
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := ln8080.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	c, err := planner.Dial(ctx, "tcp", "search:8080")
	if err != nil {
		t.Fatalf("allowed port: dial search:8080: %v", err)
	}
	msg := []byte("allowed by planner-to-search")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != string(msg) {
		t.Fatalf("echo over the allowed port: %q %v", buf, err)
	}
	c.Close()

	start := time.Now()
	dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = planner.Dial(dctx, "tcp", "search:9090")
	dcancel()
	if err == nil {
		t.Fatal("denied port: dial search:9090 succeeded")
	}
	if took := time.Since(start); took > time.Second || !errors.Is(err, syscall.ECONNREFUSED) && !strings.Contains(err.Error(), "refused") {
		t.Fatalf("denied port: dial failed after %v with %v; want connection refused at once (fail fast)", took, err)
	}
	if accepted9090.Load() != 0 {
		t.Fatal("search accepted a connection on the denied port")
	}
	st := planner.Status().Filter
	var denied uint64
	for _, r := range st.Rules {
		if r.Rule == "planner-to-search" && r.Direction == "outbound" {
			denied = r.Denied
		}
	}
	if st.PolicyVersion != version || denied == 0 || st.Rejects == 0 {
		t.Fatalf("planner's filter status %+v: want policy v%d, denials counted on planner-to-search, rejects sent", st, version)
	}
	lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
	err = logs.Wait(lctx, func(l string) bool {
		return strings.Contains(l, "packet filter: denied") && strings.Contains(l, "policy_version="+strconv.FormatUint(version, 10))
	})
	lcancel()
	if err != nil {
		t.Fatalf("no denial log with the policy version on planner within 5s:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "port=9090") {
		t.Errorf("denial log lacks the port:\n%s", logs)
	}

	// search may not open connections to planner, not even on 8080.
	plnr, err := planner.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer plnr.Close()
	dctx, dcancel = context.WithTimeout(ctx, 3*time.Second)
	_, err = search.Dial(dctx, "tcp", "planner:8080")
	dcancel()
	if err == nil {
		t.Fatal("search opened a connection to planner; no rule allows it")
	}
}

// TestImpostorCoordinator: the coordinator is replaced at its address, with
// its TLS certificate (say its TLS key leaked), by an impostor that signs
// maps with a different key. The node refuses every map it sends (newer
// serial, fewer peers), keeps its last good map and its peer.
func TestImpostorCoordinator(t *testing.T) {
	n, a, _, logs := twoNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	seat := stopCoordinator(t, n)
	before := a.Map()

	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	forged := *before
	forged.Serial = before.Serial + 1000
	forged.Peers = nil // "bravo is gone"
	signed, err := wire.Sign(evil, &forged)
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int32
	seat.serve(t, func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		switch r.URL.Path {
		case wire.PathUpdate:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, "%s", mustMarshal(t, signed))
		case wire.PathStream:
			w.Header().Set("Content-Type", "application/x-ndjson")
			fmt.Fprintf(w, "%s\n", mustMarshal(t, wire.StreamMessage{Type: wire.MsgMap, Map: signed}))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for a.Status().MapsRefused == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("node never refused the impostor's map (%d requests served); log:\n%s", served.Load(), logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "not signed by coordinator") {
		t.Errorf("refusal not logged with the reason:\n%s", logs)
	}
	after := a.Map()
	if after.Serial != before.Serial {
		t.Fatalf("node applied the impostor's map: serial %d → %d", before.Serial, after.Serial)
	}
	if _, ok := after.Peer("bravo"); !ok {
		t.Fatal("node dropped bravo on the impostor's word")
	}
	if _, err := a.Ping(ctx, "bravo"); err != nil {
		t.Fatalf("ping bravo after the impostor: %v", err)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
