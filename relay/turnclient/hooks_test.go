package turnclient

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// wrappedPC is a PacketConn that is not a *net.UDPConn, as an in-memory
// transport's would be: the allocation must read it one datagram at a
// time and still judge where each came from.
type wrappedPC struct{ net.PacketConn }

// TestConfigHooks allocates over every transport with Config.Dial and
// Config.ListenPacket standing in for the network, and relays both ways.
func TestConfigHooks(t *testing.T) {
	fx := startTURNFixture(t)
	var dials, listens atomic.Int32
	var sockets []net.PacketConn
	hooks := func(c *Config) {
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		c.ListenPacket = func(ctx context.Context, network, addr string) (net.PacketConn, error) {
			listens.Add(1)
			if network != "udp" || addr != "0.0.0.0:0" {
				t.Errorf("ListenPacket(%q, %q), want udp on 0.0.0.0:0", network, addr)
			}
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			w := wrappedPC{pc}
			sockets = append(sockets, w)
			return w, nil
		}
	}
	for _, tr := range []string{wire.TransportUDP, wire.TransportTCP, wire.TransportTLS} {
		t.Run(tr, func(t *testing.T) {
			cfg := Config{Relay: fx.relay, Transport: tr, Logger: slog.New(slog.DiscardHandler)}
			hooks(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			a, err := Allocate(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if tr == wire.TransportUDP && a.batch != nil {
				t.Fatal("a PacketConn that is not a *net.UDPConn got batched reads")
			}
			peer := loopbackUDP(t)
			peerAP := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			if err := a.Permit(peerAP.Addr()); err != nil {
				t.Fatal(err)
			}
			if _, err := peer.WriteToUDPAddrPort([]byte("hello via hooks"), a.RelayedAddr()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			n, from, err := a.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "hello via hooks" || from != peerAP {
				t.Fatalf("ReadFrom = %q from %v, %v", buf[:n], from, err)
			}
			msg := bytes.Repeat([]byte{7}, 1200)
			if err := a.WriteTo(msg, peerAP); err != nil {
				t.Fatal(err)
			}
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, _, err := peer.ReadFromUDPAddrPort(buf); err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("peer got %d bytes, %v", n, err)
			}
			if tr != wire.TransportUDP {
				return
			}
			// A relayed-looking datagram from anyone but the relay, on
			// the injected socket, is never handed out.
			evil := loopbackUDP(t)
			to := sockets[len(sockets)-1].LocalAddr()
			if _, err := evil.WriteTo([]byte{0x40, 0x00, 0x00, 0x04, 'e', 'v', 'i', 'l'}, to); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(5 * time.Second); a.rxForeign.Load() == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if a.rxForeign.Load() != 1 {
				t.Fatalf("foreign datagrams counted: %d, want 1", a.rxForeign.Load())
			}
		})
	}
	if dials.Load() != 2 || listens.Load() != 1 {
		t.Fatalf("hooks called: Dial %d, ListenPacket %d; want 2 and 1", dials.Load(), listens.Load())
	}
}

// TestExpiredCredential: by Config.Now the map's credential expired, so
// nothing is sent to the relay; a Now before the expiry lets it through.
func TestExpiredCredential(t *testing.T) {
	fx := startTURNFixture(t)
	var dialed atomic.Bool
	cfg := Config{Relay: fx.relay, Transport: wire.TransportTCP, Logger: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return fx.relay.Expires },
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed.Store(true)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	if _, err := Allocate(context.Background(), cfg); !errors.Is(err, ErrCredentialExpired) {
		t.Fatalf("Allocate with an expired credential: %v, want ErrCredentialExpired", err)
	}
	if _, err := DialProbe(context.Background(), cfg); !errors.Is(err, ErrCredentialExpired) {
		t.Fatalf("DialProbe with an expired credential: %v, want ErrCredentialExpired", err)
	}
	if dialed.Load() {
		t.Fatal("dialed the relay with a credential known to be expired")
	}
	cfg.Now = func() time.Time { return fx.relay.Expires.Add(-time.Second) }
	a, err := Allocate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if !dialed.Load() {
		t.Fatal("Config.Dial was not used")
	}
}
