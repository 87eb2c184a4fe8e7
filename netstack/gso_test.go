package netstack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

const (
	tcpFlagACK = 0x10
	tcpFlagSYN = 0x02
)

// gsoCase describes one large TCP segment to split.
type gsoCase struct {
	v6      bool
	payload int
	mss     int
	flags   uint8
	tcpOpts int // bytes of TCP options, multiple of 4
	id      uint16
	seq     uint32
}

func (c gsoCase) ipLen() int {
	if c.v6 {
		return 40
	}
	return 20
}

func (c gsoCase) tcpLen() int { return 20 + c.tcpOpts }

// build makes the packet gVisor would hand the link: headers written by
// hand (not with gVisor's header package, to stay independent), a garbage
// TCP checksum (gVisor leaves a partial one) and a patterned payload.
func (c gsoCase) build() []byte {
	ipLen, tcpLen := c.ipLen(), c.tcpLen()
	p := make([]byte, ipLen+tcpLen+c.payload)
	if c.v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(tcpLen+c.payload))
		p[6] = 6 // next header TCP
		p[7] = 64
		copy(p[8:24], addrA6.AsSlice())
		copy(p[24:40], addrB6.AsSlice())
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], c.id)
		p[6] = 0x40 // DF
		p[8] = 64
		p[9] = 6
		copy(p[12:16], addrA4.AsSlice())
		copy(p[16:20], addrB4.AsSlice())
		binary.BigEndian.PutUint16(p[10:], refChecksum(p[:20]))
	}
	tcp := p[ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 443)
	binary.BigEndian.PutUint32(tcp[4:], c.seq)
	binary.BigEndian.PutUint32(tcp[8:], 0xabcdef01)
	tcp[12] = byte(tcpLen/4) << 4
	tcp[13] = c.flags
	binary.BigEndian.PutUint16(tcp[14:], 65000)
	binary.BigEndian.PutUint16(tcp[16:], 0xdead)
	for i := 0; i < c.tcpOpts; i++ {
		tcp[20+i] = 1 // NOP
	}
	for i := range c.payload {
		p[ipLen+tcpLen+i] = byte(i*7 + i>>8)
	}
	return p
}

// refChecksum is RFC 1071 done the slow, obvious way.
func refChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// refTCPChecksum computes the checksum a receiver expects, with the
// pseudo-header built as a separate byte slice.
func refTCPChecksum(p []byte, v6 bool, ipLen int) uint16 {
	seg := bytes.Clone(p[ipLen:])
	seg[16], seg[17] = 0, 0
	var ph []byte
	if v6 {
		ph = append(ph, p[8:40]...)
		ph = binary.BigEndian.AppendUint32(ph, uint32(len(seg)))
		ph = append(ph, 0, 0, 0, 6)
	} else {
		ph = append(ph, p[12:20]...)
		ph = append(ph, 0, 6)
		ph = binary.BigEndian.AppendUint16(ph, uint16(len(seg)))
	}
	return refChecksum(append(ph, seg...))
}

func TestTCPSegmenter(t *testing.T) {
	cases := []gsoCase{
		{v6: false, payload: 5000, mss: 1000, flags: tcpFlagACK, id: 7, seq: 1000},
		{v6: false, payload: 5001, mss: 1000, flags: tcpFlagACK | tcpFlagPSH, id: 0xfffe, seq: 0xffffff00},
		{v6: false, payload: 64000, mss: 1228, flags: tcpFlagACK | tcpFlagPSH | tcpFlagFIN, tcpOpts: 12},
		{v6: false, payload: 1227, mss: 1228, flags: tcpFlagACK | tcpFlagPSH, tcpOpts: 12},
		{v6: false, payload: 0, mss: 1228, flags: tcpFlagACK | tcpFlagFIN},
		{v6: false, payload: 3, mss: 1, flags: tcpFlagACK | tcpFlagFIN | tcpFlagPSH},
		{v6: true, payload: 5000, mss: 1000, flags: tcpFlagACK, seq: 42},
		{v6: true, payload: 63999, mss: 1208, flags: tcpFlagACK | tcpFlagPSH | tcpFlagFIN, tcpOpts: 12, seq: 0xfffffff0},
		{v6: true, payload: 1209, mss: 1208, flags: tcpFlagACK | tcpFlagPSH},
		{v6: true, payload: 17, mss: 0, flags: tcpFlagACK | tcpFlagPSH}, // mss 0: no split
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("v6=%v/payload=%d/mss=%d/flags=%#x", c.v6, c.payload, c.mss, c.flags), func(t *testing.T) {
			orig := c.build()
			pkt := bytes.Clone(orig)
			ipLen, tcpLen := c.ipLen(), c.tcpLen()
			var g tcpSegmenter
			g.reset(pkt, c.v6, ipLen, tcpLen, c.mss)
			effMSS := c.mss
			if effMSS <= 0 || effMSS > c.payload {
				effMSS = max(c.payload, 1)
			}
			want := max(1, (c.payload+effMSS-1)/effMSS)
			if got := g.segments(); got != want {
				t.Fatalf("segments() = %d, want %d", got, want)
			}
			// Small batches force fill to resume across calls.
			const offset = 16
			var out [][]byte
			for !g.done() {
				bufs := make([][]byte, 3)
				for i := range bufs {
					bufs[i] = make([]byte, offset+ipLen+tcpLen+effMSS)
				}
				sizes := make([]int, len(bufs))
				n, err := g.fill(bufs, sizes, offset)
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					out = append(out, bufs[i][offset:offset+sizes[i]])
				}
			}
			if !bytes.Equal(pkt, orig) {
				t.Fatal("segmenter modified its input")
			}
			if len(out) != want {
				t.Fatalf("got %d segments, want %d", len(out), want)
			}
			var payload []byte
			for i, s := range out {
				last := i == len(out)-1
				plen := len(s) - ipLen - tcpLen
				if plen > effMSS || (!last && plen != effMSS) {
					t.Errorf("seg %d: payload %d with mss %d", i, plen, effMSS)
				}
				if c.v6 {
					if got := int(binary.BigEndian.Uint16(s[4:])); got != len(s)-40 {
						t.Errorf("seg %d: IPv6 payload length %d, want %d", i, got, len(s)-40)
					}
				} else {
					if got := int(binary.BigEndian.Uint16(s[2:])); got != len(s) {
						t.Errorf("seg %d: IPv4 total length %d, want %d", i, got, len(s))
					}
					if got, want := binary.BigEndian.Uint16(s[4:]), c.id+uint16(i); got != want {
						t.Errorf("seg %d: IPv4 ID %d, want %d", i, got, want)
					}
					if refChecksum(s[:20]) != 0 {
						t.Errorf("seg %d: bad IPv4 header checksum", i)
					}
				}
				tcp := s[ipLen:]
				if got, want := binary.BigEndian.Uint32(tcp[4:]), c.seq+uint32(i*effMSS); got != want {
					t.Errorf("seg %d: seq %d, want %d", i, got, want)
				}
				wantFlags := c.flags
				if !last {
					wantFlags &^= tcpFlagFIN | tcpFlagPSH
				}
				if tcp[13] != wantFlags {
					t.Errorf("seg %d: flags %#x, want %#x", i, tcp[13], wantFlags)
				}
				if got, want := binary.BigEndian.Uint16(tcp[16:]), refTCPChecksum(s, c.v6, ipLen); got != want {
					t.Errorf("seg %d: TCP checksum %#04x, want %#04x", i, got, want)
				}
				if i == 0 && !bytes.Equal(s[ipLen:ipLen+13], orig[ipLen:ipLen+13]) {
					t.Errorf("seg 0: TCP header changed")
				}
				payload = append(payload, s[ipLen+tcpLen:]...)
			}
			if !bytes.Equal(payload, orig[ipLen+tcpLen:]) {
				t.Error("reassembled payload differs")
			}
		})
	}
}

func TestTCPSegmenterShortBuffer(t *testing.T) {
	c := gsoCase{payload: 3000, mss: 1000, flags: tcpFlagACK}
	var g tcpSegmenter
	g.reset(c.build(), false, 20, 20, c.mss)
	bufs := [][]byte{make([]byte, 1040), make([]byte, 100)}
	sizes := make([]int, 2)
	n, err := g.fill(bufs, sizes, 0)
	if n != 1 || err != errShortBuffer || !g.done() {
		t.Fatalf("fill = %d, %v, done=%v; want 1, errShortBuffer, true", n, err, g.done())
	}
}
