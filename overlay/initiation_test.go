package overlay

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TestInitReader reads the sender's key out of a real initiation: a stock
// wireguard-go device initiates to us over a channel bind.
func TestInitReader(t *testing.T) {
	gen := func() *ecdh.PrivateKey {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	sender, us, other := gen(), gen(), gen()
	binds := bindtest.NewChannelBinds()
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), binds[0], device.NewLogger(device.LogLevelError, ""))
	t.Cleanup(dev.Close)
	if err := dev.IpcSet("private_key=" + hex.EncodeToString(sender.Bytes()) + "\n"); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	// A persistent keepalive set on a running device initiates at once.
	// Port 1 is the channel bind's other end.
	cfg := fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:1\npersistent_keepalive_interval=1\nallowed_ip=10.9.0.2/32\n",
		hex.EncodeToString(us.PublicKey().Bytes()))
	if err := dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
	fns, _, err := binds[1].Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { binds[1].Close() })
	got := make(chan []byte, 1)
	go func() {
		bufs, sizes, eps := [][]byte{make([]byte, 2048)}, make([]int, 1), make([]conn.Endpoint, 1)
		if n, err := fns[0](bufs, sizes, eps); err == nil && n == 1 {
			got <- bufs[0][:sizes[0]]
		}
	}()
	var msg []byte
	select {
	case msg = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no initiation from the device")
	}
	if msgType(msg) != wgMsgInitiation {
		t.Fatalf("first message has type %d, want an initiation", msgType(msg))
	}

	r, err := newInitReader([32]byte(us.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	key, ok := r.initiator(msg)
	if !ok || key != [32]byte(sender.PublicKey().Bytes()) {
		t.Fatalf("initiator = %x, %v; want the sender's key %x", key, ok, sender.PublicKey().Bytes())
	}
	// Addressed to another key: MAC1 does not verify.
	r2, _ := newInitReader([32]byte(other.Bytes()))
	if _, ok := r2.initiator(msg); ok {
		t.Error("an initiation to another key was read")
	}
	// Any flipped byte of the encrypted static key fails (MAC1 fixed up
	// so the AEAD is what rejects it), as does a truncated message.
	bad := append([]byte(nil), msg...)
	bad[wgInitStatic] ^= 1
	mac, _ := blake2s.New128(r.mac1Key[:])
	mac.Write(bad[:wgInitMAC1])
	copy(bad[wgInitMAC1:], mac.Sum(nil))
	if _, ok := r.initiator(bad); ok {
		t.Error("a tampered static key was read")
	}
	if _, ok := r.initiator(msg[:100]); ok {
		t.Error("a truncated initiation was read")
	}
	var nilReader *initReader
	if _, ok := nilReader.initiator(msg); ok {
		t.Error("nil reader read an initiation")
	}
}
