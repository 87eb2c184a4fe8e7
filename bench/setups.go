package bench

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/overlay"
	"github.com/agentnet/agentnet/relay"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

// setup is one way of carrying TCP from a client to a server in this
// process: dial reaches the server behind ln.
type setup struct {
	name   string
	target string // the server's address as the client dials it
	dial   func(ctx context.Context) (net.Conn, error)
	ln     net.Listener
	close  func()
	// cpu is optional: the CPU seconds so far of everything that carries
	// this setup's traffic. Default: this process's (cpuSeconds).
	cpu func() float64
	// run is optional: a setup measured by another process (bench/tsnet)
	// takes one repetition's samples with it; dial and ln are nil then.
	run func(ctx context.Context, p dpParams, add func(setup, metric string, v float64)) error
}

// benchPort is the server port inside the tunnels.
const benchPort = 9000

// newLoopback: plain kernel TCP over 127.0.0.1.
func newLoopback() (*setup, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	var d net.Dialer
	return &setup{
		name:  "loopback",
		ln:    ln,
		dial:  func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		close: func() { ln.Close() },
	}, nil
}

// newWGRaw: two bare wireguard-go devices, each on wireguard-go's stock
// tun/netstack, with the stock UDP bind on 127.0.0.1.
func newWGRaw() (*setup, error) {
	const mtu = 1280 // as agentnet's default
	ipA, ipB := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
	tunA, netA, err := wgnetstack.CreateNetTUN([]netip.Addr{ipA}, nil, mtu)
	if err != nil {
		return nil, err
	}
	tunB, netB, err := wgnetstack.CreateNetTUN([]netip.Addr{ipB}, nil, mtu)
	if err != nil {
		tunA.Close()
		return nil, err
	}
	logger := device.NewLogger(device.LogLevelSilent, "")
	devA := device.NewDevice(tunA, conn.NewDefaultBind(), logger)
	devB := device.NewDevice(tunB, conn.NewDefaultBind(), logger)
	cleanup := func() { devA.Close(); devB.Close() }
	keyA, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		cleanup()
		return nil, err
	}
	keyB, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		cleanup()
		return nil, err
	}
	up := func(d *device.Device, k *ecdh.PrivateKey) (int, error) {
		if err := d.IpcSet("private_key=" + hex.EncodeToString(k.Bytes()) + "\nlisten_port=0\n"); err != nil {
			return 0, err
		}
		if err := d.Up(); err != nil {
			return 0, err
		}
		return listenPort(d)
	}
	portA, err := up(devA, keyA)
	if err == nil {
		var portB int
		portB, err = up(devB, keyB)
		if err == nil {
			peer := func(d *device.Device, k *ecdh.PrivateKey, ip netip.Addr, port int) error {
				return d.IpcSet(fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\nendpoint=127.0.0.1:%d\n",
					hex.EncodeToString(k.PublicKey().Bytes()), ip, port))
			}
			if err = peer(devA, keyB, ipB, portB); err == nil {
				err = peer(devB, keyA, ipA, portA)
			}
		}
	}
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("wg-raw: configure: %w", err)
	}
	ln, err := netB.ListenTCPAddrPort(netip.AddrPortFrom(ipB, benchPort))
	if err != nil {
		cleanup()
		return nil, err
	}
	dst := netip.AddrPortFrom(ipB, benchPort)
	return &setup{
		name:  "wg-raw",
		ln:    ln,
		dial:  func(ctx context.Context) (net.Conn, error) { return netA.DialContextTCPAddrPort(ctx, dst) },
		close: func() { ln.Close(); cleanup() },
	}, nil
}

func listenPort(d *device.Device) (int, error) {
	s, err := d.IpcGet()
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(s) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "listen_port="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("no listen_port in device config")
}

// agentnetNet is a small non-test harness: an in-process coordinator in a
// temp dir and a reusable join token.
type agentnetNet struct {
	dir   string
	relay *relay.Server // on 127.0.0.1, relaying to loopback peers (bench only)
	coord *coordinator.Coordinator
	admin *adminclient.Client
	token string
	log   *slog.Logger
}

func newAgentnetNet(ctx context.Context, log *slog.Logger) (*agentnetNet, error) {
	dir, err := os.MkdirTemp("", "agentnet-bench-")
	if err != nil {
		return nil, err
	}
	rl, err := relay.New(ctx, relay.Config{Name: "bench-relay", Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "relay"),
		AllowLoopback: true, BandwidthPerUser: -1, MaxAllocationsPerUser: 64, Logger: log.With("c", "relay")})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start relay: %w", err)
	}
	c, err := coordinator.New(coordinator.Config{DataDir: filepath.Join(dir, "coord"), Listen: "127.0.0.1:0", Logger: log.With("c", "coord"),
		RateLimits: benchNoLimits, Relays: []turncred.Cred{rl.Cred()}})
	if err != nil {
		rl.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start coordinator: %w", err)
	}
	n := &agentnetNet{dir: dir, relay: rl, coord: c, admin: adminclient.New(c.AdminCred()), log: log}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tok, err := n.admin.CreateToken(ctx, wire.CreateTokenRequest{Reusable: true, TTLSeconds: 3600, Tags: []string{"tag:bench"}})
	if err != nil {
		n.close()
		return nil, fmt.Errorf("create token: %w", err)
	}
	n.token = tok.Token
	return n, nil
}

func (n *agentnetNet) close() {
	n.coord.Close()
	n.relay.Close()
	os.RemoveAll(n.dir)
}

func (n *agentnetNet) nodeConfig(name string) overlay.Config {
	return overlay.Config{
		StateDir:      filepath.Join(n.dir, name),
		Token:         n.token,
		Name:          name,
		ListenAddr:    netip.MustParseAddrPort("127.0.0.1:0"),
		EnrollTimeout: 10 * time.Second,
		Logger:        n.log.With("c", name),
	}
}

func (n *agentnetNet) startNode(ctx context.Context, name string) (*overlay.Node, error) {
	return n.startNodeConfig(ctx, n.nodeConfig(name))
}

func (n *agentnetNet) startNodeConfig(ctx context.Context, cfg overlay.Config) (*overlay.Node, error) {
	name := cfg.Name
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	nd, err := overlay.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start node %s: %w", name, err)
	}
	return nd, nil
}

// waitPeers waits until every node's map lists all the others.
func waitPeers(ctx context.Context, nodes ...*overlay.Node) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		ok := true
		for _, nd := range nodes {
			if len(nd.Map().Peers) < len(nodes)-1 {
				ok = false
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("nodes did not learn each other within 10s")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// newAgentnetDirect: two agentnet nodes in netstack mode, direct over
// 127.0.0.1 UDP, with the in-process coordinator of net.
func newAgentnetDirect(ctx context.Context, an *agentnetNet) (*setup, error) {
	a, err := an.startNode(ctx, "alpha")
	if err != nil {
		return nil, err
	}
	b, err := an.startNode(ctx, "bravo")
	if err != nil {
		a.Close()
		return nil, err
	}
	cleanup := func() { a.Close(); b.Close() }
	if err := waitPeers(ctx, a, b); err != nil {
		cleanup()
		return nil, err
	}
	ln, err := b.Listen("tcp", fmt.Sprintf(":%d", benchPort))
	if err != nil {
		cleanup()
		return nil, err
	}
	dst := netip.AddrPortFrom(b.Self().IPv4, benchPort).String()
	return &setup{
		name:   "agentnet-direct",
		target: dst,
		ln:     ln,
		dial:   func(ctx context.Context) (net.Conn, error) { return a.Dial(ctx, "tcp", dst) },
		close:  func() { ln.Close(); cleanup() },
	}, nil
}

// newAgentnetRelay: two agentnet nodes in netstack mode that send
// everything through the TURN relay of an (overlay.Config.ForceRelay on
// both, so both directions are relayed), over 127.0.0.1.
func newAgentnetRelay(ctx context.Context, an *agentnetNet) (*setup, error) {
	var nodes [2]*overlay.Node
	for i, name := range []string{"relay-a", "relay-b"} {
		cfg := an.nodeConfig(name)
		cfg.ForceRelay = true
		nd, err := an.startNodeConfig(ctx, cfg)
		if err != nil {
			if i == 1 {
				nodes[0].Close()
			}
			return nil, err
		}
		nodes[i] = nd
	}
	a, b := nodes[0], nodes[1]
	cleanup := func() { a.Close(); b.Close() }
	// Both sides must be on the relay path before measuring.
	deadline := time.Now().Add(20 * time.Second)
	for !onRelay(a, "relay-b") || !onRelay(b, "relay-a") {
		if time.Now().After(deadline) {
			cleanup()
			return nil, errors.New("nodes not on the relay path within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ln, err := b.Listen("tcp", fmt.Sprintf(":%d", benchPort))
	if err != nil {
		cleanup()
		return nil, err
	}
	dst := netip.AddrPortFrom(b.Self().IPv4, benchPort).String()
	return &setup{
		name:   SetupAgentnetRelay,
		target: dst,
		ln:     ln,
		dial:   func(ctx context.Context) (net.Conn, error) { return a.Dial(ctx, "tcp", dst) },
		close:  func() { ln.Close(); cleanup() },
	}, nil
}

func onRelay(n *overlay.Node, peer string) bool {
	for _, p := range n.Status().Peers {
		if p.Name == peer && p.Path != nil && p.Path.Kind == "relay" {
			return true
		}
	}
	return false
}
