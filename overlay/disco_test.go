package overlay

import (
	"crypto/rand"
	"net/netip"
	"testing"

	"golang.org/x/crypto/nacl/box"
)

func discoPair(t testing.TB) (aPub, bPub, ab, ba *[32]byte) {
	aPub, aPriv, _ := box.GenerateKey(rand.Reader)
	bPub, bPriv, _ := box.GenerateKey(rand.Reader)
	ab, ba = new([32]byte), new([32]byte)
	box.Precompute(ab, bPub, aPriv)
	box.Precompute(ba, aPub, bPriv)
	return aPub, bPub, ab, ba
}

func TestDiscoRoundTrip(t *testing.T) {
	aPub, _, ab, ba := discoPair(t)
	_, _, _, other := discoPair(t)
	msgs := []discoMsg{
		{kind: discoPing, txid: newTxID(), wgKey: [32]byte{1, 2, 3}},
		{kind: discoPong, txid: newTxID(), addr: netip.MustParseAddrPort("198.51.100.7:41641")},
		{kind: discoPong, txid: newTxID(), addr: netip.MustParseAddrPort("[2001:db8::1]:9")},
		{kind: discoCallMe, cands: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.1:1"), netip.MustParseAddrPort("198.18.0.1:2")}},
		{kind: discoPunched, wgKey: [32]byte{4, 5, 6}},
		{kind: discoPunched, wgKey: [32]byte{7}, reply: true},
	}
	for _, m := range msgs {
		pkt := sealDisco(aPub, ab, m)
		if !isDisco(pkt) || msgType(pkt) >= 1 && msgType(pkt) <= 4 || discoSender(pkt) != *aPub {
			t.Fatalf("packet header wrong: %x", pkt[:8])
		}
		got, err := openDisco(pkt, ba)
		if err != nil {
			t.Fatalf("open %d: %v", m.kind, err)
		}
		if got.kind != m.kind || got.txid != m.txid || got.wgKey != m.wgKey || got.addr != m.addr || len(got.cands) != len(m.cands) || got.reply != m.reply {
			t.Fatalf("round trip: got %+v want %+v", got, m)
		}
		if _, err := openDisco(pkt, other); err == nil {
			t.Fatal("opened with the wrong key")
		}
		pkt[len(pkt)-1] ^= 1
		if _, err := openDisco(pkt, ba); err == nil {
			t.Fatal("opened a tampered packet")
		}
	}
}

func FuzzParseDisco(f *testing.F) {
	f.Add([]byte{discoPing})
	f.Add(append([]byte{discoCallMe}, make([]byte, 36)...))
	f.Add(append([]byte{discoPunched}, make([]byte, 33)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseDisco(b)
		if err == nil && len(m.cands) > maxCallMeMaybe {
			t.Fatal("too many candidates")
		}
	})
}
