package overlay_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// Example embeds two agentnet nodes in one Go program: "search" serves
// net/http on its virtual IP, "planner" calls it by name through WireGuard.
// A real agent embeds one node and gets its token from the operator.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "agentnet-example-")
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The operator's side: a coordinator and a join token.
	coord, err := coordinator.New(coordinator.Config{DataDir: filepath.Join(dir, "coord"), Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer coord.Close()
	tok, err := adminclient.New(coord.AdminCred()).CreateToken(ctx, wire.CreateTokenRequest{Reusable: true})
	if err != nil {
		log.Fatal(err)
	}

	// Each agent: a node, from a state dir, a token and a name.
	start := func(name string) *overlay.Node {
		n, err := overlay.New(ctx, overlay.Config{
			StateDir: filepath.Join(dir, name), Token: tok.Token, Name: name,
			ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"), Logger: quiet,
		})
		if err != nil {
			log.Fatal(err)
		}
		return n
	}
	search, planner := start("search"), start("planner")
	defer search.Close()
	defer planner.Close()

	// Server: plain net/http on the overlay listener.
	ln, err := search.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from search, you asked for %s", r.URL.Path)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	// Client: net/http with the node as its dialer; names resolve through
	// the node's network map. WaitPeer returns once the coordinator has
	// told planner about search (a peer is listed once it is up).
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return planner.Dial(ctx, network, addr)
		},
	}}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := planner.WaitPeer(wctx, "search"); err != nil {
		log.Fatal(err)
	}
	resp, err := client.Get("http://search.agents.internal/docs")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
	// Output: 200 OK hello from search, you asked for /docs
}
