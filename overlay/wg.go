package overlay

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// wgPeer is the part of a netmap peer that wireguard-go is configured with.
type wgPeer struct {
	key       [32]byte
	keepalive int            // persistent keepalive seconds, 0 = off
	endpoint  netip.AddrPort // zero: none known
	allowed   []netip.Prefix
	// cands are the UDP candidates the peer published (wire.Node.Endpoints):
	// not wireguard-go configuration, the sources whose initiations are not
	// strangers' (initlimit.go).
	cands []netip.AddrPort
}

func peerFromNode(n wire.Node) (wgPeer, error) {
	k, err := wire.ParseWGKey(n.WGKey)
	if err != nil {
		return wgPeer{}, fmt.Errorf("peer %s: %w", n.Name, err)
	}
	p := wgPeer{key: k}
	if n.IPv4.IsValid() {
		p.allowed = append(p.allowed, netip.PrefixFrom(n.IPv4, 32))
	}
	if n.IPv6.IsValid() {
		p.allowed = append(p.allowed, netip.PrefixFrom(n.IPv6, 128))
	}
	if len(n.Endpoints) > 0 {
		p.endpoint = n.Endpoints[0]
	}
	p.cands = n.Endpoints
	return p, nil
}

func (p wgPeer) equal(q wgPeer) bool {
	if p.key != q.key || p.endpoint != q.endpoint || p.keepalive != q.keepalive || len(p.allowed) != len(q.allowed) {
		return false
	}
	for i := range p.allowed {
		if p.allowed[i] != q.allowed[i] {
			return false
		}
	}
	return true
}

// keepaliveFor picks which side of a pair sends persistent keepalives: only
// the one with the larger WireGuard key, the side whose initiation wins a
// collision in peerBind. Setting a keepalive makes wireguard-go initiate a
// handshake at once (inside the UAPI set that adds the peer), so the winner
// has always sent its initiation before peerBind.flush redelivers one the
// loser sent earlier, and the tie-break drops that one: one handshake per
// pair, never two crossing.
func keepaliveFor(self, peer [32]byte) int {
	if bytes.Compare(self[:], peer[:]) > 0 {
		return persistentKeepalive
	}
	return 0
}

// wgDiff returns the UAPI "set" text that turns the peers in old into the
// peers in new without touching unchanged ones, so established sessions and
// handshakes survive unrelated netmap changes. Paths are not WireGuard
// config: every peer's endpoint is its peerBind endpoint "peer:<key>".
func wgDiff(old, new map[[32]byte]wgPeer) string {
	var b strings.Builder
	for k := range old {
		if _, ok := new[k]; !ok {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hex.EncodeToString(k[:]))
		}
	}
	for k, p := range new {
		if o, ok := old[k]; ok && o.equal(p) {
			continue
		}
		fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\n", hex.EncodeToString(k[:]), peerEndpointString(k))
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\nreplace_allowed_ips=true\n", p.keepalive)
		for _, a := range p.allowed {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String()
}

// peerStats is what wireguard-go reports per peer (UAPI "get").
type peerStats struct {
	Endpoint      string
	LastHandshake time.Time
	RxBytes       uint64
	TxBytes       uint64
}

// parseWGStats parses UAPI "get" output into per-key stats.
func parseWGStats(s string) map[[32]byte]*peerStats {
	out := make(map[[32]byte]*peerStats)
	var cur *peerStats
	var sec, nsec int64
	flush := func() {
		if cur != nil && (sec != 0 || nsec != 0) {
			cur.LastHandshake = time.Unix(sec, nsec)
		}
		sec, nsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
			var key [32]byte
			if b, err := hex.DecodeString(v); err == nil && len(b) == 32 {
				copy(key[:], b)
			}
			cur = &peerStats{}
			out[key] = cur
		case "endpoint":
			if cur != nil {
				cur.Endpoint = v
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			if cur != nil {
				cur.RxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.TxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		}
	}
	flush()
	return out
}
