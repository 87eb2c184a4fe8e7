package controlclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// ErrGarbled marks a stream line that is too long or not a StreamMessage.
var ErrGarbled = errors.New("garbled netmap stream message")

// StreamReadBuffer is the read buffer size for the netmap stream: lines
// longer than it are assembled from fragments (up to wire.MaxStreamLine).
const StreamReadBuffer = 64 << 10

// OpenStream opens the netmap stream (wire.PathStream), asking for deltas.
// The caller reads the body with ReadLine or ReadStreamMessage and closes
// it; it stays open until the coordinator ends it or ctx is done.
func (c *Client) OpenStream(ctx context.Context) (io.ReadCloser, error) {
	req, err := c.NewRequest(ctx, http.MethodGet, wire.PathStream, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(wire.HeaderStreamDeltas, "1")
	resp, err := c.stream.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control: open netmap stream: %w", err)
	}
	if err := CheckResponse(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp.Body, nil
}

// StreamMaps opens the netmap stream and calls onMap for every map and
// delta message (and onProbe, if not nil, for every probe) until the
// stream ends, onMap fails, ctx is done, or the coordinator is silent for
// 3 keepalives (wire.StreamKeepalive).
func (c *Client) StreamMaps(ctx context.Context, onMap func(*wire.StreamMessage) error, onProbe func(*wire.Probe)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body, err := c.OpenStream(ctx)
	if err != nil {
		return err
	}
	defer body.Close()
	idle := time.AfterFunc(3*wire.StreamKeepalive, cancel)
	defer idle.Stop()
	r := bufio.NewReaderSize(body, StreamReadBuffer)
	for {
		msg, err := ReadStreamMessage(r, wire.MaxStreamLine)
		if err != nil {
			if errors.Is(err, ErrGarbled) {
				return fmt.Errorf("control: netmap stream: %w", err)
			}
			if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
				return fmt.Errorf("control: netmap stream idle or closed: %w", ctx.Err())
			}
			return fmt.Errorf("control: netmap stream: %w", err)
		}
		idle.Reset(3 * wire.StreamKeepalive)
		switch {
		case msg.Type == wire.MsgMap || msg.Type == wire.MsgDelta:
			if err := onMap(msg); err != nil {
				return fmt.Errorf("control: netmap stream: %w", err)
			}
		case msg.Type == wire.MsgProbe && msg.Probe != nil && onProbe != nil:
			onProbe(msg.Probe)
		}
	}
}

// ReadStreamMessage reads and decodes one line of the netmap stream (at
// most max bytes). A map message always carries a map, a delta message a
// delta; other types (keepalives, and types newer than this client) are
// returned for the caller to ignore. Errors are ErrGarbled or the reader's.
func ReadStreamMessage(r *bufio.Reader, max int) (*wire.StreamMessage, error) {
	line, err := ReadLine(r, nil, max)
	if err != nil {
		return nil, err
	}
	var msg wire.StreamMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		return nil, fmt.Errorf("%w (%d bytes): %v", ErrGarbled, len(line), err)
	}
	if msg.Type == wire.MsgMap && msg.Map == nil {
		return nil, fmt.Errorf("%w: map message without a map", ErrGarbled)
	}
	if msg.Type == wire.MsgDelta && msg.Delta == nil {
		return nil, fmt.Errorf("%w: delta message without a delta", ErrGarbled)
	}
	return &msg, nil
}

// ReadLine appends one newline-terminated line of at most max bytes to buf
// and returns it (buf may be nil; pass buf[:0] to reuse it). A longer line
// is ErrGarbled, and nothing more of it is read.
func ReadLine(r *bufio.Reader, buf []byte, max int) ([]byte, error) {
	for {
		frag, err := r.ReadSlice('\n')
		buf = append(buf, frag...)
		if len(buf) > max {
			return nil, fmt.Errorf("%w: line longer than %d bytes", ErrGarbled, max)
		}
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}
