package overlay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
)

// localAPI serves status and ping to the CLI over a unix socket in the state
// dir. The socket is 0600: whoever may read the node's keys may ask it.
type localAPI struct {
	srv  *http.Server
	ln   net.Listener
	done sync.WaitGroup
}

func startLocalAPI(n *Node) (*localAPI, error) {
	path := filepath.Join(n.cfg.StateDir, socketFile)
	_ = os.Remove(path) // a stale socket of a previous run
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("overlay: local API socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("overlay: local API socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), localPingTimeout)
		defer cancel()
		res, err := n.Ping(ctx, r.URL.Query().Get("peer"))
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/rotate", n.handleRotate) // rotate.go
	a := &localAPI{srv: &http.Server{Handler: mux, ReadHeaderTimeout: localHeaderTimeout}, ln: ln}
	a.done.Add(1)
	go func() {
		defer a.done.Done()
		_ = a.srv.Serve(ln)
	}()
	return a, nil
}

func (a *localAPI) close() {
	ctx, cancel := context.WithTimeout(context.Background(), localShutdownGrace)
	defer cancel()
	if a.srv.Shutdown(ctx) != nil {
		a.srv.Close()
	}
	a.done.Wait()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// LocalClient talks to a running node's local API.
type LocalClient struct {
	http *http.Client
}

// NewLocalClient connects to the node whose state dir is stateDir.
func NewLocalClient(stateDir string) *LocalClient {
	path := filepath.Join(stateDir, socketFile)
	return &LocalClient{http: &http.Client{
		Timeout: localClientTimeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, fmt.Errorf("no node running with state %s (%w); start one with 'agentnet node --state %s'", stateDir, err, stateDir)
			}
			return c, nil
		}},
	}}
}

func (c *LocalClient) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agentnet"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("local API: HTTP %d", resp.StatusCode)
	}
	return json.Unmarshal(b, out)
}

// Status fetches the node's status.
func (c *LocalClient) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.get(ctx, "/v1/status", &s)
	return s, err
}

// Ping pings a peer through the node.
func (c *LocalClient) Ping(ctx context.Context, peer string) (PingResult, error) {
	var r PingResult
	err := c.get(ctx, "/v1/ping?peer="+url.QueryEscape(peer), &r)
	return r, err
}
