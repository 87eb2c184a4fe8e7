package controlclient

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

// fuzzStreamMax is the line limit the fuzzer decodes with: small, so long
// lines are reached; the logic is the same as with wire.MaxStreamLine.
const fuzzStreamMax = 4 << 10

// FuzzDecodeStreamMessage feeds arbitrary bytes to the node's netmap stream
// decoder (ReadStreamMessage, as StreamMaps calls it) until it stops: it
// never panics, never reads a line over the limit, and every message it
// returns is one the node can act on (a map message carries a map).
func FuzzDecodeStreamMessage(f *testing.F) {
	m, _ := json.Marshal(wire.StreamMessage{Type: wire.MsgMap, Map: &wire.Signed{Payload: []byte(`{"serial":1}`), Sig: make([]byte, 64)}})
	ka, _ := json.Marshal(wire.StreamMessage{Type: wire.MsgKeepalive})
	for _, seed := range [][]byte{
		append(append(append(m, '\n'), ka...), '\n'),
		append(ka, '\n'),
		[]byte("{\"type\":\"map\"}\n"),
		[]byte("{\"type\":\"map\",\"map\":null}\n"),
		[]byte("{\"type\":\"probe\",\"probe\":{}}\n"),
		[]byte("{\"type\":\"future\",\"x\":1}\n"),
		[]byte("null\n"),
		[]byte("{\"type\":\"map\",\"map\":{\"payload\":\"!!\"}}\n"),
		[]byte("{\"type\":"),
		append(bytes.Repeat([]byte("a"), fuzzStreamMax+1), '\n'),
		[]byte("\n\n\n"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), 16) // small buffer: lines span many fragments
		for range len(data) + 1 {
			msg, err := ReadStreamMessage(r, fuzzStreamMax)
			if err != nil {
				if !errors.Is(err, ErrGarbled) && !errors.Is(err, io.EOF) {
					t.Fatalf("decoder error %v is neither garbled nor EOF", err)
				}
				return
			}
			if msg == nil || msg.Type == wire.MsgMap && msg.Map == nil {
				t.Fatalf("decoder returned %+v, nil error", msg)
			}
		}
		t.Fatal("decoder returned more messages than there are bytes")
	})
}
