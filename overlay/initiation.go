package overlay

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/subtle"
	"hash"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// Reading the sender's static key out of a WireGuard handshake initiation,
// as the responder does (WireGuard paper §5.4.2, Noise IK), so a peer that
// wireguard-go does not have configured yet (lazywg.go) can be configured
// before the initiation reaches it. Only the first steps are done: MAC1
// (cheap, needs our public key: junk is dropped before any DH), then one
// DH and one AEAD open. Timestamp, replay and the rest stay wireguard-go's.

// Initiation layout: type(4) sender(4) ephemeral(32) static(32+16)
// timestamp(12+16) mac1(16) mac2(16).
const (
	wgInitiationSize = 148
	wgInitEphemeral  = 8
	wgInitStatic     = 40
	wgInitMAC1       = 116
)

const (
	noiseConstruction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
	wgIdentifier      = "WireGuard v1 zx2c4 Jason@zx2c4.com"
	wgLabelMAC1       = "mac1----"
)

// initReader holds what reading initiations sent to one static key needs.
// It is immutable.
type initReader struct {
	priv    *ecdh.PrivateKey
	mac1Key [32]byte // HASH(LABEL_MAC1 || our public key)
	hash    [32]byte // H after mixing in our public key
	chain   [32]byte // C0 = HASH(CONSTRUCTION)
}

func newInitReader(priv [32]byte) (*initReader, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return nil, err
	}
	pub := k.PublicKey().Bytes()
	r := &initReader{priv: k, chain: blake2s.Sum256([]byte(noiseConstruction))}
	r.mac1Key = blake2s.Sum256(append([]byte(wgLabelMAC1), pub...))
	h := blake2s.Sum256(append(r.chain[:], wgIdentifier...))
	r.hash = blake2s.Sum256(append(h[:], pub...))
	return r, nil
}

// initiator returns the static public key of the initiation msg's sender,
// false if msg is not a well-formed initiation to our key.
func (r *initReader) initiator(msg []byte) ([32]byte, bool) {
	var key [32]byte
	if r == nil || len(msg) != wgInitiationSize || msgType(msg) != wgMsgInitiation {
		return key, false
	}
	mac, _ := blake2s.New128(r.mac1Key[:])
	mac.Write(msg[:wgInitMAC1])
	if subtle.ConstantTimeCompare(mac.Sum(nil), msg[wgInitMAC1:wgInitMAC1+16]) != 1 {
		return key, false
	}
	eph := msg[wgInitEphemeral : wgInitEphemeral+32]
	chain := kdf1(r.chain[:], eph)
	h := blake2s.Sum256(append(r.hash[:], eph...))
	epub, err := ecdh.X25519().NewPublicKey(eph)
	if err != nil {
		return key, false
	}
	ss, err := r.priv.ECDH(epub)
	if err != nil { // all-zero shared secret: a low-order point
		return key, false
	}
	_, k := kdf2(chain[:], ss)
	aead, _ := chacha20poly1305.New(k[:])
	var nonce [chacha20poly1305.NonceSize]byte
	static, err := aead.Open(nil, nonce[:], msg[wgInitStatic:wgInitStatic+32+16], h[:])
	if err != nil {
		return key, false
	}
	copy(key[:], static)
	return key, true
}

func newBlake2s() hash.Hash {
	h, _ := blake2s.New256(nil)
	return h
}

func hmacBlake2s(key []byte, in ...[]byte) [32]byte {
	m := hmac.New(newBlake2s, key)
	for _, b := range in {
		m.Write(b)
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// kdf1 and kdf2 are the paper's KDF_n (HKDF with HMAC-BLAKE2s).
func kdf1(chain, in []byte) [32]byte {
	t0 := hmacBlake2s(chain, in)
	return hmacBlake2s(t0[:], []byte{1})
}

func kdf2(chain, in []byte) (t1, t2 [32]byte) {
	t0 := hmacBlake2s(chain, in)
	t1 = hmacBlake2s(t0[:], []byte{1})
	t2 = hmacBlake2s(t0[:], t1[:], []byte{2})
	return t1, t2
}
