package overlay_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/logtest"
	"github.com/agentnet/agentnet/internal/testnet"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
)

// TestHostileCoordinatorKeepsLastGoodMap: the coordinator is replaced, at
// its address and with its own certificate (so the pin matches), by a
// server that answers the node's update with a garbled body, then with an
// oversized one, then with an unsigned map followed by an oversized stream
// line. The node refuses each with an error that says what was wrong,
// keeps its last good map and keeps reaching its peer.
func TestHostileCoordinatorKeepsLastGoodMap(t *testing.T) {
	n, a, _, logs := twoNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, "bravo"); err != nil {
		t.Fatalf("ping before: %v", err)
	}

	seat := stopCoordinator(t, n)
	before := a.Map() // the last good map: no other can arrive now
	var (
		mu      sync.Mutex
		updates = map[string]int{} // per node: the answers go in order for each
		streams atomic.Int32
	)
	seat.serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case wire.PathUpdate:
			mu.Lock()
			updates[r.Header.Get(wire.HeaderNode)]++
			nth := updates[r.Header.Get(wire.HeaderNode)]
			mu.Unlock()
			switch nth {
			case 1:
				w.Write([]byte(`{"payload":"e30=","sig":`))
			case 2:
				w.Write(bytes.Repeat([]byte(" "), wire.MaxStreamLine+1))
			default:
				w.Write([]byte(`{"payload":"e30=","sig":"AAAA"}`))
			}
		case wire.PathStream:
			streams.Add(1)
			w.Write(bytes.Repeat([]byte(" "), wire.MaxStreamLine+1))
		default:
			http.NotFound(w, r)
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for streams.Load() == 0 || !strings.Contains(logs.String(), "line longer than") {
		if time.Now().After(deadline) {
			t.Fatalf("node did not go through the hostile answers within 20s: %d streams; log:\n%s", streams.Load(), logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"garbled response", "response larger than 8388608 bytes", "refusing network map", "line longer than 8388608 bytes"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("node log lacks %q:\n%s", want, logs)
		}
	}
	after := a.Map()
	if after.Serial != before.Serial || len(after.Peers) != len(before.Peers) || after.Peers[0].IPv4 != before.Peers[0].IPv4 {
		t.Fatalf("node changed its map under a hostile coordinator: serial %d → %d", before.Serial, after.Serial)
	}
	if st := a.Status(); st.MapsRefused == 0 || st.Connected {
		t.Fatalf("status %+v: want refused maps counted and not connected", st)
	}
	if _, err := a.Ping(ctx, "bravo"); err != nil {
		t.Fatalf("ping after the hostile answers: %v", err)
	}
}

// twoNodes starts alpha (its Warn logs captured) and bravo and waits until
// they know each other.
func twoNodes(t *testing.T) (n *testnet.Net, a, b *overlay.Node, logs *logtest.Buffer) {
	t.Helper()
	n = testnet.New(t)
	logs = &logtest.Buffer{}
	cfg := n.NodeConfig("alpha")
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a = n.StartNodeConfig(cfg)
	b = n.StartNode("bravo")
	testnet.WaitPeers(t, a, b)
	return n, a, b, logs
}

// coordinatorSeat is the address and TLS certificate of a stopped
// coordinator: whoever serves there with that certificate passes the
// nodes' pin check.
type coordinatorSeat struct {
	addr string
	cert tls.Certificate
}

// stopCoordinator stops n's coordinator and returns its seat.
func stopCoordinator(t *testing.T, n *testnet.Net) coordinatorSeat {
	t.Helper()
	coordDir := filepath.Join(n.Dir, "coord")
	cert, err := tls.LoadX509KeyPair(filepath.Join(coordDir, "tls.crt"), filepath.Join(coordDir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	seat := coordinatorSeat{addr: strings.TrimPrefix(n.Coord.URL(), "https://"), cert: cert}
	n.StopCoordinator()
	return seat
}

// serve runs h at the seat, speaking the control protocol's version
// header, until the test ends.
func (s coordinatorSeat) serve(t *testing.T, h http.HandlerFunc) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after Close
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("take over the coordinator's address: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
		h(w, r)
	})}
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{s.cert}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
}
