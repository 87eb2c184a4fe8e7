package dns

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// exchangeRaw sends raw as one query over transport and returns the
// response, or nil when none comes within wait.
func exchangeRaw(t *testing.T, transport, addr string, raw []byte, wait time.Duration) *mdns.Msg {
	t.Helper()
	co, err := mdns.Dial(transport, addr)
	if err != nil {
		t.Fatalf("dial %s %s: %v", transport, addr, err)
	}
	defer co.Close()
	co.SetDeadline(time.Now().Add(wait))
	if _, err := co.Write(raw); err != nil { // TCP: Conn adds the length prefix
		t.Fatalf("%s write: %v", transport, err)
	}
	resp, err := co.ReadMsg()
	if err != nil {
		return nil
	}
	return resp
}

func pack(t *testing.T, m *mdns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack %v: %v", m, err)
	}
	return b
}

func opt(version uint8) *mdns.OPT {
	o := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
	o.SetUDPSize(1232)
	o.SetVersion(version)
	return o
}

// Issue 17, item 13: queries a stub resolver never sends, which the server
// answered as if well-formed. Real queries over UDP and TCP to a real
// server; each case except the controls and "two questions" (which miekg
// already refused) was answered NOERROR before.
func TestMalformedQueriesRefused(t *testing.T) {
	const qname = "alice.agents.internal."
	query := func() *mdns.Msg { return new(mdns.Msg).SetQuestion(qname, mdns.TypeA) }
	soa := &mdns.SOA{Hdr: mdns.RR_Header{Name: "agents.internal.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 5},
		Ns: "ns.agents.internal.", Mbox: "x.agents.internal."}
	aRR, err := mdns.NewRR("alice.agents.internal. 5 IN A 100.96.0.9")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		raw   func() []byte
		rcode int // -1: no response at all
	}{
		{"control: plain query", func() []byte { return pack(t, query()) }, mdns.RcodeSuccess},
		{"control: EDNS version 0", func() []byte {
			m := query()
			m.Extra = []mdns.RR{opt(0)}
			return pack(t, m)
		}, mdns.RcodeSuccess},
		{"two OPT records", func() []byte {
			m := query()
			m.Extra = []mdns.RR{opt(0), opt(0)}
			return pack(t, m)
		}, mdns.RcodeFormatError},
		{"EDNS version 1", func() []byte {
			m := query()
			m.Extra = []mdns.RR{opt(1)}
			return pack(t, m)
		}, mdns.RcodeBadVers},
		{"NSCOUNT=1", func() []byte {
			m := query()
			m.Ns = []mdns.RR{soa}
			return pack(t, m)
		}, mdns.RcodeFormatError},
		{"ANCOUNT=1", func() []byte {
			m := query()
			m.Answer = []mdns.RR{aRR}
			return pack(t, m)
		}, mdns.RcodeFormatError},
		{"additional record that is not an OPT", func() []byte {
			m := query()
			m.Extra = []mdns.RR{aRR}
			return pack(t, m)
		}, mdns.RcodeFormatError},
		{"trailing second question", func() []byte {
			b := pack(t, query())
			second := pack(t, new(mdns.Msg).SetQuestion("bob.agents.internal.", mdns.TypeA))
			return append(b, second[12:]...) // QDCOUNT still 1
		}, mdns.RcodeFormatError},
		{"trailing byte", func() []byte { return append(pack(t, query()), 0) }, mdns.RcodeFormatError},
		{"two questions", func() []byte {
			m := query()
			m.Question = append(m.Question, mdns.Question{Name: "bob.agents.internal.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
			return pack(t, m)
		}, mdns.RcodeFormatError},
		{"ARCOUNT=1 without the record", func() []byte {
			b := pack(t, query())
			b[11] = 1
			return b
		}, mdns.RcodeFormatError},
		{"a response", func() []byte {
			m := query()
			m.Response = true
			return pack(t, m)
		}, -1},
	}
	_, addr := startServer(t, "")
	for _, transport := range transports {
		for _, tt := range tests {
			t.Run(transport+"/"+tt.name, func(t *testing.T) {
				raw := tt.raw()
				id := raw[0:2]
				wait := 5 * time.Second
				if tt.rcode < 0 {
					wait = 300 * time.Millisecond
				}
				resp := exchangeRaw(t, transport, addr, raw, wait)
				if tt.rcode < 0 {
					if resp != nil {
						t.Fatalf("answered %s", mdns.RcodeToString[resp.Rcode])
					}
					return
				}
				if resp == nil {
					t.Fatal("no response")
				}
				if resp.Id != uint16(id[0])<<8|uint16(id[1]) || !resp.Response {
					t.Fatalf("response id %d QR %v, want the query's id", resp.Id, resp.Response)
				}
				if resp.Rcode != tt.rcode {
					t.Fatalf("rcode %s, want %s\n%v", mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[tt.rcode], resp)
				}
				switch tt.rcode {
				case mdns.RcodeSuccess:
					if len(resp.Answer) != 1 {
						t.Fatalf("answers %v", resp.Answer)
					}
				case mdns.RcodeBadVers: // RFC 6891 §6.1.3: in an OPT of the version we speak
					o := resp.IsEdns0()
					if o == nil || o.Version() != 0 || len(resp.Answer) != 0 {
						t.Fatalf("BADVERS response %v", resp)
					}
				default:
					if len(resp.Answer) != 0 {
						t.Fatalf("refusal with answers %v", resp.Answer)
					}
				}
			})
		}
	}
}

// FuzzQuery drives raw packets through the server's query path as miekg
// does, minus the socket: vet, acceptHeader, unpack, handler. It must never
// panic, answer at most once with a message that packs, and answer NOERROR
// only a query framed exactly as its header says, with one question, no
// answer or authority records and at most one additional record, an OPT
// of version 0.
func FuzzQuery(f *testing.F) {
	q := new(mdns.Msg).SetQuestion("alice.agents.internal.", mdns.TypeA)
	plain, _ := q.Pack()
	q.Extra = []mdns.RR{opt(0)}
	edns, _ := q.Pack()
	q.Extra = []mdns.RR{opt(0), opt(1)}
	twoOPT, _ := q.Pack()
	f.Add(plain)
	f.Add(edns)
	f.Add(twoOPT)
	f.Add(append(append([]byte{}, plain...), plain[12:]...))
	f.Add(make([]byte, 12))
	s := New(Config{})
	s.SetRecords(testRecords)
	f.Fuzz(func(t *testing.T, data []byte) {
		m := s.vet(bytes.Clone(data))
		if len(m) < 12 {
			return // miekg drops it
		}
		dh := mdns.Header{Id: binary.BigEndian.Uint16(m), Bits: binary.BigEndian.Uint16(m[2:]),
			Qdcount: binary.BigEndian.Uint16(m[4:]), Ancount: binary.BigEndian.Uint16(m[6:]),
			Nscount: binary.BigEndian.Uint16(m[8:]), Arcount: binary.BigEndian.Uint16(m[10:])}
		if acceptHeader(dh) != mdns.MsgAccept {
			return // miekg answers FORMERR or NOTIMP, or nothing for a response
		}
		if len(m) != len(data) {
			t.Fatalf("vet rewrote %x yet its header was accepted", data)
		}
		req := new(mdns.Msg)
		if err := req.Unpack(m); err != nil {
			return // miekg answers FORMERR
		}
		w := &recorder{}
		s.serveDNS(w, req)
		if len(w.msgs) != 1 {
			t.Fatalf("handler wrote %d messages", len(w.msgs))
		}
		resp := w.msgs[0]
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("response does not pack: %v\n%v", err, resp)
		}
		if resp.Rcode == mdns.RcodeSuccess {
			o := req.IsEdns0()
			if !framed(data) || len(req.Question) != 1 || len(req.Answer)+len(req.Ns) != 0 || len(req.Extra) > 1 ||
				(len(req.Extra) == 1 && (o == nil || o.Version() != 0)) {
				t.Fatalf("answered NOERROR to a query it must refuse:\n%v", req)
			}
		}
	})
}
