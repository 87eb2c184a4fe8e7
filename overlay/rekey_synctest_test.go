package overlay

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TestStreamAcrossRekeys (issue 17 catalogue): two real wireguard-go
// devices over the in-memory network, inside a testing/synctest bubble so
// wireguard-go's own timers run on the fake clock: a packet every 100 ms
// for 10 minutes. The session rekeys every REKEY_AFTER_TIME (120 s,
// WireGuard paper §6.1) — at least 4 times — and every packet arrives.
func TestStreamAcrossRekeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newMemNet()
		type end struct {
			ch   *tuntest.ChannelTUN
			dev  *device.Device
			sock *memSocket
			key  *ecdh.PrivateKey
		}
		mk := func() *end {
			e := &end{ch: tuntest.NewChannelTUN(), sock: mn.socket()}
			e.key, _ = ecdh.X25519().GenerateKey(rand.Reader)
			e.dev = device.NewDevice(e.ch.TUN(), e.sock, device.NewLogger(device.LogLevelError, ""))
			if err := e.dev.IpcSet(fmt.Sprintf("private_key=%s\n", hex.EncodeToString(e.key.Bytes()))); err != nil {
				t.Fatal(err)
			}
			return e
		}
		a, b := mk(), mk()
		peer := func(on, to *end, ip string) {
			cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n", hex.EncodeToString(to.key.PublicKey().Bytes()), to.sock.LocalAddr(), ip)
			if err := on.dev.IpcSet(cfg); err != nil {
				t.Fatal(err)
			}
		}
		peer(a, b, iB4.String())
		peer(b, a, iA4.String())
		for _, e := range []*end{a, b} {
			if err := e.dev.Up(); err != nil {
				t.Fatal(err)
			}
		}

		var delivered atomic.Int64
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-a.ch.Inbound:
					delivered.Add(1)
				case <-stop:
					return
				}
			}
		}()
		handshakes := map[string]bool{}
		lastHandshake := func() string {
			s, _ := a.dev.IpcGet()
			for _, l := range strings.Split(s, "\n") {
				if v, ok := strings.CutPrefix(l, "last_handshake_time_sec="); ok && v != "0" {
					return v
				}
			}
			return ""
		}
		const every, total = 100 * time.Millisecond, 10 * time.Minute
		sent := 0
		start := time.Now()
		for time.Since(start) < total {
			b.ch.Outbound <- testPkt{src: iB4, dst: iA4, proto: protoUDP, sport: 1, dport: 2, payload: []byte("stream")}.build()
			sent++
			time.Sleep(every)
			if h := lastHandshake(); h != "" {
				handshakes[h] = true
			}
		}
		time.Sleep(time.Second)
		n := int(delivered.Load())
		close(stop)
		a.dev.Close()
		b.dev.Close()
		t.Logf("%d packets sent over %v of fake time, %d delivered, %d handshakes (first + rekeys)", sent, total, n, len(handshakes))
		if n != sent {
			t.Errorf("%d of %d packets delivered", n, sent)
		}
		if len(handshakes) < 5 {
			t.Errorf("%d handshakes in %v, want the first and at least 4 rekeys", len(handshakes), total)
		}
	})
}
