package overlay

import (
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/agentnet/agentnet/wire"
)

// The packet filter enforces the policy the coordinator compiled for this
// node (wire.Filter, carried in the signed map) on every packet crossing
// between WireGuard and the data plane. It sits right on the seam, as a
// tun.Device wrapping the plane's device (netstack or kernel TUN):
//
//	peers ─► wireguard-go ─► filterDevice.Write ─► netstack / kernel  (inbound)
//	peers ◄─ wireguard-go ◄─ filterDevice.Read  ◄─ netstack / kernel  (outbound)
//
// so it sees decrypted, authenticated packets whose source wireguard-go has
// already checked against the sending peer's allowed IPs (cryptokey
// routing; its drops are counted as "spoofed", see wgLogged).
//
// Decisions are connection-oriented and default deny: an Inbound rule lets
// a peer open connections to this node, an Outbound rule lets this node open
// them to a peer, and the flow table (conntrack.go) lets the replies of an
// allowed connection through both ways. A flow is re-checked against the
// rules once after every rule change, so a revoked peer's live sessions stop
// too. Denied inbound packets are dropped silently; denied outbound packets
// are answered locally (reject.go) so the agent fails fast.

// FilterDenial describes one packet the filter denied (Config.OnFilterDeny).
type FilterDenial struct {
	Time          time.Time
	Direction     string     // "inbound" (from a peer) or "outbound" (from this node)
	Src, Dst      netip.Addr // invalid for packets too malformed to carry them
	Proto         uint8      // IP protocol number (6 TCP, 17 UDP, 1/58 ICMP)
	Port          uint16     // destination port for TCP and UDP, else 0
	Rule          string     // the rule that listed the peer but not this protocol/port, or "default deny"
	Reason        string
	PolicyVersion uint64
}

// denyReason is why a packet was denied.
type denyReason uint8

const (
	reasonNoRule     denyReason = iota // no rule lists the peer
	reasonPort                         // a rule lists the peer, not this protocol or port
	reasonNoFlow                       // an echo reply without its request
	reasonUnrelated                    // an ICMP error about no known connection
	reasonMalformed                    // invalid
	reasonFragment                     // invalid
	reasonNotLocal                     // invalid: inbound packet not addressed to this node
	reasonNotUnicast                   // invalid: multicast, broadcast or unspecified address
	reasonForeignSrc                   // invalid: outbound packet not from one of this node's addresses
	numReasons
)

// firstInvalid is the first reason counted as invalid rather than denied by
// the policy.
const firstInvalid = reasonMalformed

var reasonText = [numReasons]string{
	reasonNoRule:     "no rule allows this peer",
	reasonPort:       "protocol or port not allowed",
	reasonNoFlow:     "reply without a connection",
	reasonUnrelated:  "ICMP error about no known connection",
	reasonMalformed:  "malformed",
	reasonFragment:   "fragment",
	reasonNotLocal:   "not addressed to this node",
	reasonNotUnicast: "not unicast",
	reasonForeignSrc: "source is not this node's address",
}

// reasonLabel is the reason as a Prometheus label value.
var reasonLabel = [numReasons]string{
	reasonMalformed:  "malformed",
	reasonFragment:   "fragment",
	reasonNotLocal:   "not_local",
	reasonNotUnicast: "not_unicast",
	reasonForeignSrc: "foreign_source",
}

// filterConfig configures a filterDevice. Each field says its default.
type filterConfig struct {
	// Logger for denials (Warn, rate-limited) and rule problems (Error).
	// Optional, default slog.Default().
	Logger *slog.Logger
	// OnDeny is called for every denied packet, on the data path: it must
	// not block and must not keep the FilterDenial's addresses beyond
	// copying them. Optional, default none.
	OnDeny func(FilterDenial)
	// MaxFlows bounds the flow table. Optional, default 32768.
	MaxFlows int
	// Idle timeouts of tracked connections. Optional; defaults TCP 2h,
	// UDP 3m, ICMP echo 30s, other protocols 10m.
	TCPTimeout, UDPTimeout, ICMPTimeout, OtherTimeout time.Duration
	// LogInterval: each (source, destination, port, reason) is logged at
	// most once per interval. Optional, default 10s.
	LogInterval time.Duration
	// Now is the clock. Optional, default time.Now.
	Now func() time.Time
}

// filterDevice is the packet filter as a tun.Device wrapping the data
// plane's device (see the file comment).
//
// Concurrency: Read is called by one goroutine at a time (wireguard-go's
// RoutineReadFromTUN), Write by several at once (one per peer); both read
// the rule set through an atomic pointer without locks and share the flow
// table (sharded mutexes). setFilter may run at any time.
//
// Buffers: Read marks denied packets with size 0 (wireguard-go skips them;
// bufs keep their order because wireguard-go pairs them with its
// elements). Write reorders the slice headers of bufs to drop denied
// packets without copying any packet data, then passes the survivors on.
// Close closes the inner device (blocked calls return its error).
//
// Lock order: none is held with another. setMu is the control path's
// (setFilter); rejectMu, logs.mu and the flow table's shard locks are the
// data path's, each taken alone and never across a call into another.
type filterDevice struct {
	wgtun.Device // the data plane's device: netstack or kernel TUN

	log    *slog.Logger
	onDeny func(FilterDenial)
	now    func() time.Time
	start  time.Time // origin of the ns clock the flow table uses

	rules atomic.Pointer[ruleSet] // nil until the first map: deny all
	empty *ruleSet
	flows *flowTable

	setMu   sync.Mutex   // serializes setFilter; guards the fields below
	gen     uint64       // generation of the installed rule set
	current *wire.Filter // the filter installed last
	ctrs    counterSet

	logs denyLimiter

	rejectMu   sync.Mutex // guards the reject buffers
	rejectBuf  []byte
	rejectBufs [][]byte

	stats filterStats

	// lazy configures a peer in wireguard-go on its first outbound packet
	// (lazywg.go); nil: every peer is configured. Set before use.
	lazy *lazyWG
}

// filterStats are the filter's own counters (rule counters live in
// counterSet).
type filterStats struct {
	defaultDenied [2]atomic.Uint64             // by direction
	invalid       [2][numReasons]atomic.Uint64 // by direction, reasons >= firstInvalid
	unmatched     [2]atomic.Uint64             // reasonNoFlow and reasonUnrelated
	rejects       atomic.Uint64                // RSTs and ICMP errors injected
	rejectErrs    atomic.Uint64                // ... that the inner device refused
	spoofed       atomic.Uint64                // wireguard-go's disallowed-source drops
}

var _ wgtun.Device = (*filterDevice)(nil)

func newFilterDevice(inner wgtun.Device, cfg filterConfig) *filterDevice {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.TCPTimeout, defaultTCPTimeout)
	def(&cfg.UDPTimeout, defaultUDPTimeout)
	def(&cfg.ICMPTimeout, defaultICMPTimeout)
	def(&cfg.OtherTimeout, defaultOtherTimeout)
	def(&cfg.LogInterval, defaultDenyLogInterval)
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = defaultMaxFlows
	}
	f := &filterDevice{
		Device:     inner,
		log:        cfg.Logger,
		onDeny:     cfg.OnDeny,
		now:        cfg.Now,
		start:      cfg.Now(),
		empty:      &ruleSet{},
		flows:      newFlowTable(cfg.MaxFlows, cfg.TCPTimeout, cfg.UDPTimeout, cfg.ICMPTimeout, cfg.OtherTimeout),
		rejectBuf:  make([]byte, rejectOffset+maxICMPv6Error),
		rejectBufs: make([][]byte, 1),
	}
	f.logs.interval = int64(cfg.LogInterval)
	return f
}

// clock is nanoseconds since the device was made (monotonic with time.Now).
func (f *filterDevice) clock() int64 { return int64(f.now().Sub(f.start)) }

// setFilter installs the filter of a new map. self4 and self6 are this
// node's addresses: inbound packets to any other address are denied. An
// unchanged filter keeps its rule set, so flows are not re-checked.
func (f *filterDevice) setFilter(nf *wire.Filter, self4, self6 netip.Addr) {
	f.setMu.Lock()
	defer f.setMu.Unlock()
	if old := f.rules.Load(); old != nil && old.self == [2]netip.Addr{self4, self6} && reflect.DeepEqual(f.current, nf) {
		return
	}
	f.gen++
	rs, problems := compileFilter(nf, self4, self6, f.gen, &f.ctrs)
	for _, p := range problems {
		f.log.Error("packet filter: refusing a rule of the coordinator's policy", "reason", p, "policy_version", rs.version)
	}
	f.rules.Store(rs)
	f.current = nf
	if nf == nil {
		f.log.Warn("packet filter: the network map carries no policy; denying all traffic", "reason", "no filter")
		return
	}
	f.log.Info("packet filter updated", "policy_version", rs.version,
		"inbound_rules", len(rs.rules[dirIn]), "outbound_rules", len(rs.rules[dirOut]))
}

func (f *filterDevice) ruleSet() *ruleSet {
	if rs := f.rules.Load(); rs != nil {
		return rs
	}
	return f.empty
}

// Read implements tun.Device: packets this node sends to peers. Denied
// packets get size 0 and, where due, a local reject.
func (f *filterDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := f.Device.Read(bufs, sizes, offset)
	if n <= 0 {
		return n, err
	}
	rs, now := f.ruleSet(), f.clock()
	var p pktInfo
	var last netip.Addr
	for i := range n {
		if sizes[i] <= 0 {
			continue
		}
		pkt := bufs[i][offset : offset+sizes[i]]
		if !f.check(dirOut, pkt, rs, now, &p) {
			sizes[i] = 0
			continue
		}
		if dst := p.dst(); dst != last { // batches mostly go to one peer
			f.lazy.outbound(dst)
			last = dst
		}
	}
	return n, err
}

// Write implements tun.Device: decrypted packets from peers. Denied packets
// are dropped from the batch; the count returned is len(bufs).
func (f *filterDevice) Write(bufs [][]byte, offset int) (int, error) {
	rs, now := f.ruleSet(), f.clock()
	var p pktInfo
	kept := 0
	for i, b := range bufs {
		if len(b) <= offset || !f.check(dirIn, b[offset:], rs, now, &p) {
			continue
		}
		if kept != i {
			bufs[kept] = b
		}
		kept++
	}
	if kept == 0 {
		return len(bufs), nil
	}
	if _, err := f.Device.Write(bufs[:kept], offset); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// check decides one packet, counting and reporting it. p is scratch space.
func (f *filterDevice) check(dir direction, pkt []byte, rs *ruleSet, now int64, p *pktInfo) bool {
	switch parsePacket(pkt, p) {
	case parseMalformed:
		f.deny(dir, p, rs, -1, reasonMalformed, pkt)
		return false
	case parseFragment:
		f.deny(dir, p, rs, -1, reasonFragment, pkt)
		return false
	}
	if !isUnicast(p.key.dst) || !isUnicast(p.key.src) {
		f.deny(dir, p, rs, -1, reasonNotUnicast, pkt)
		return false
	}
	if dir == dirIn {
		if d := addr16(p.key.dst); d != rs.self[0] && d != rs.self[1] {
			f.deny(dir, p, rs, -1, reasonNotLocal, pkt)
			return false
		}
	} else if s := addr16(p.key.src); s != rs.self[0] && s != rs.self[1] {
		// In kernel TUN mode the host may route a packet with any source
		// into the TUN (a forwarded packet, a spoofing process): the
		// receiver's wireguard-go would drop it as not from the peer's
		// allowed IPs, but it must not leave this node at all.
		f.deny(dir, p, rs, -1, reasonForeignSrc, pkt)
		return false
	}

	// A packet of a tracked connection, either way.
	if e, reply, ok := f.flows.lookup(p.key, now); ok && (e.dir == dir) != reply {
		if e.gen == rs.gen {
			rs.rules[e.dir][e.rule].ctr.allowed.Add(1)
			return true
		}
		opener := p.key
		if reply {
			opener = opener.reverse()
		}
		peer := opener.dst
		if e.dir == dirIn {
			peer = opener.src
		}
		if idx, _ := match(rs.rules[e.dir], peer, opener.proto, opener.dport, p.hasPorts); idx >= 0 {
			f.flows.update(p.key, rs.gen, int32(idx))
			rs.rules[e.dir][idx].ctr.allowed.Add(1)
			return true
		}
		// The rule that let it open is gone: the connection is revoked.
		f.flows.remove(p.key)
	}

	switch p.icmp {
	case icmpReply:
		f.deny(dir, p, rs, -1, reasonNoFlow, pkt)
		return false
	case icmpError:
		// Related to a connection when it quotes a packet of one, sent by
		// the error's destination.
		if p.inner.src == p.key.dst {
			if e, _, ok := f.flows.lookup(p.inner, now); ok {
				if e.gen == rs.gen {
					rs.rules[e.dir][e.rule].ctr.allowed.Add(1)
				}
				return true
			}
		}
		f.deny(dir, p, rs, -1, reasonUnrelated, pkt)
		return false
	}

	peer := p.key.dst
	if dir == dirIn {
		peer = p.key.src
	}
	idx, near := match(rs.rules[dir], peer, p.key.proto, p.key.dport, p.hasPorts)
	if idx < 0 {
		reason := reasonNoRule
		if near >= 0 {
			reason = reasonPort
		}
		f.deny(dir, p, rs, near, reason, pkt)
		return false
	}
	rs.rules[dir][idx].ctr.allowed.Add(1)
	if p.icmp != icmpOther && !(p.key.proto == protoTCP && p.tcpFlags&tcpRST != 0) {
		f.flows.insert(p.key, dir, int32(idx), rs.gen, now)
	}
	return true
}

// deny counts, reports and (outbound, policy denials) rejects one packet.
// near is the rule index to blame, or -1.
func (f *filterDevice) deny(dir direction, p *pktInfo, rs *ruleSet, near int, reason denyReason, pkt []byte) {
	rule := defaultDenyRule
	switch {
	case reason >= firstInvalid:
		f.stats.invalid[dir][reason].Add(1)
		if reason == reasonNotUnicast {
			return // multicast chatter of the local stack; counted only
		}
	case near >= 0:
		rule = rs.rules[dir][near].name
		rs.rules[dir][near].ctr.denied.Add(1)
	case reason == reasonNoRule:
		f.stats.defaultDenied[dir].Add(1)
	default:
		f.stats.unmatched[dir].Add(1)
	}
	if dir == dirOut && reason < firstInvalid {
		// Reject last, after counting and logging: the local stack takes
		// the RST synchronously, so a dialer can return (and look at the
		// counters and the log) before this function does.
		defer f.reject(pkt, p)
	}
	var port uint16
	if p.hasPorts {
		port = p.key.dport
	}
	logIt := f.logs.allow(p, dir, reason, f.clock())
	if f.onDeny == nil && !logIt {
		return
	}
	d := FilterDenial{Direction: dir.String(), Proto: p.key.proto, Port: port, Rule: rule,
		Reason: reasonText[reason], PolicyVersion: rs.version}
	if reason != reasonMalformed {
		d.Src, d.Dst = p.src(), p.dst()
	}
	if f.onDeny != nil {
		d.Time = f.now()
		f.onDeny(d)
	}
	if !logIt {
		return
	}
	f.log.Warn("packet filter: denied", "src", d.Src, "dst", d.Dst, "proto", protoName(d.Proto), "port", d.Port,
		"direction", d.Direction, "rule", d.Rule, "reason", d.Reason, "policy_version", d.PolicyVersion)
}

// reject answers a denied outbound packet through the inner device.
func (f *filterDevice) reject(pkt []byte, p *pktInfo) {
	f.rejectMu.Lock()
	defer f.rejectMu.Unlock()
	n := buildReject(f.rejectBuf[rejectOffset:], pkt, p)
	if n == 0 {
		return
	}
	f.rejectBufs[0] = f.rejectBuf[:rejectOffset+n]
	// Counted before the write for the same reason deny rejects last: the
	// write delivers the reject synchronously; a failed write takes the
	// count back and counts the error.
	f.stats.rejects.Add(1)
	if _, err := f.Device.Write(f.rejectBufs, rejectOffset); err != nil {
		f.stats.rejects.Add(^uint64(0))
		f.stats.rejectErrs.Add(1)
	}
}

func protoName(p uint8) string {
	switch p {
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMP, protoICMPv6:
		return "icmp"
	}
	return fmt.Sprint(p)
}

// denyLimiter lets each (source, destination, port, reason, direction) be
// logged once per interval. It holds at most maxDenyKeys keys; when full of
// recent ones, further denials are counted but not logged.
type denyLimiter struct {
	interval   int64 // ns
	mu         sync.Mutex
	last       map[denyKey]int64 // guarded by mu
	suppressed atomic.Uint64     // denials not logged because the table was full
}

type denyKey struct {
	src, dst [16]byte
	port     uint16
	proto    uint8
	reason   denyReason
	dir      direction
}

func (l *denyLimiter) allow(p *pktInfo, dir direction, reason denyReason, now int64) bool {
	k := denyKey{src: p.key.src, dst: p.key.dst, proto: p.key.proto, reason: reason, dir: dir}
	if p.hasPorts {
		k.port = p.key.dport
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[denyKey]int64)
	}
	if t, ok := l.last[k]; ok && now-t < l.interval {
		return false
	}
	if len(l.last) >= maxDenyKeys {
		for k, t := range l.last {
			if now-t >= l.interval {
				delete(l.last, k)
			}
		}
		if len(l.last) >= maxDenyKeys {
			l.suppressed.Add(1)
			return false
		}
	}
	l.last[k] = now
	return true
}

// wireguard-go reports a packet whose inner source is not among the
// sending peer's allowed IPs only through its verbose log (device/receive.go:
// "IPv4 packet with disallowed source address from %v"); it has already
// dropped it. That is a peer sending with a forged source.
const wgDisallowedSource = "packet with disallowed source address from %v"

// wgLogged sees every verbose log line of wireguard-go before it is
// formatted; it counts and reports spoofed packets and returns true for
// them.
func (f *filterDevice) wgLogged(format string, args []any) bool {
	if !strings.HasSuffix(format, wgDisallowedSource) {
		return false
	}
	f.stats.spoofed.Add(1)
	peer := ""
	if len(args) > 0 {
		peer = fmt.Sprint(args[0])
	}
	var p pktInfo // one log key per peer and family
	copy(p.key.src[:], peer)
	if len(peer) > 16 {
		copy(p.key.dst[:], peer[16:])
	}
	if strings.HasPrefix(format, "IPv6") {
		p.key.proto = 6
	}
	if f.logs.allow(&p, dirIn, numReasons, f.clock()) {
		f.log.Warn("wireguard dropped a packet with a forged source address", "peer", peer,
			"reason", "source not in the peer's allowed IPs", "family", format[:4])
	}
	return true
}

// FilterStatus is the packet filter's part of Status. JSON names are stable.
type FilterStatus struct {
	PolicyVersion uint64             `json:"policy_version"`
	Rules         []FilterRuleStatus `json:"rules"` // rules of the current policy, inbound first
	// DefaultDenied counts packets no rule listed the peer of.
	DefaultDenied FilterDirCounts `json:"default_denied"`
	// Unmatched counts replies and ICMP errors of no known connection.
	Unmatched FilterDirCounts `json:"unmatched"`
	// Invalid counts packets denied before the rules: by direction and
	// reason (malformed, fragment, not_local, not_unicast, foreign_source);
	// zeros left out.
	Invalid        []FilterInvalidStatus `json:"invalid,omitempty"`
	Rejects        uint64                `json:"rejects_sent"`    // RSTs and ICMP errors answered locally
	Spoofed        uint64                `json:"spoofed"`         // packets wireguard-go dropped for a forged inner source
	Flows          int                   `json:"flows"`           // tracked connections
	FlowsEvicted   uint64                `json:"flows_evicted"`   // live connections forgotten because the table was full
	LogsSuppressed uint64                `json:"logs_suppressed"` // denials not logged: rate-limit table full
}

// FilterRuleStatus counts one rule's packets.
type FilterRuleStatus struct {
	Rule      string `json:"rule"`
	Direction string `json:"direction"` // inbound: peers open to us; outbound: we open to peers
	Allowed   uint64 `json:"allowed"`   // packets allowed, replies included
	Denied    uint64 `json:"denied"`    // packets of the rule's peers on a protocol or port it does not allow
}

// FilterDirCounts are packet counts by direction.
type FilterDirCounts struct {
	Inbound  uint64 `json:"inbound"`
	Outbound uint64 `json:"outbound"`
}

// FilterInvalidStatus counts invalid packets of one direction and reason.
type FilterInvalidStatus struct {
	Direction string `json:"direction"`
	Reason    string `json:"reason"`
	Packets   uint64 `json:"packets"`
}

func (f *filterDevice) status() FilterStatus {
	rs := f.ruleSet()
	st := FilterStatus{
		PolicyVersion:  rs.version,
		DefaultDenied:  FilterDirCounts{f.stats.defaultDenied[dirIn].Load(), f.stats.defaultDenied[dirOut].Load()},
		Unmatched:      FilterDirCounts{f.stats.unmatched[dirIn].Load(), f.stats.unmatched[dirOut].Load()},
		Rejects:        f.stats.rejects.Load(),
		Spoofed:        f.stats.spoofed.Load(),
		Flows:          f.flows.len(),
		FlowsEvicted:   f.flows.evicted.Load(),
		LogsSuppressed: f.logs.suppressed.Load(),
		Rules:          []FilterRuleStatus{},
	}
	for _, dir := range []direction{dirIn, dirOut} {
		for i := range rs.rules[dir] {
			r := &rs.rules[dir][i]
			st.Rules = append(st.Rules, FilterRuleStatus{Rule: r.name, Direction: dir.String(),
				Allowed: r.ctr.allowed.Load(), Denied: r.ctr.denied.Load()})
		}
		for reason := firstInvalid; reason < numReasons; reason++ {
			if v := f.stats.invalid[dir][reason].Load(); v > 0 {
				st.Invalid = append(st.Invalid, FilterInvalidStatus{Direction: dir.String(), Reason: reasonLabel[reason], Packets: v})
			}
		}
	}
	return st
}
