package console

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"time"
)

// Event stream timing. Streams learn of changes by polling the map serial
// (Core.Serial), which every change bumps (online/offline flips included)
// and which the coordinator reads lock-free, so a poll costs one atomic
// load.
const (
	eventsPoll      = 500 * time.Millisecond
	eventsKeepalive = 15 * time.Second // an SSE comment, so idle proxies keep the stream
)

// handleEvents serves the live network map as Server-Sent Events: a
// "snapshot" event with the Graph as JSON on connect and after every
// change. It returns when the client goes away, the coordinator closes
// (the request context is cancelled), the session ends, or a write fails
// or times out.
func (con *Console) handleEvents(w http.ResponseWriter, r *http.Request) {
	s := sessionOf(r)
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(con.cfg.WriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		// Clear the deadline once written: over HTTP/2 (browsers) a pending
		// deadline resets an idle stream when it passes.
		return rc.Flush() == nil && rc.SetWriteDeadline(time.Time{}) == nil
	}
	var last []byte
	var serial uint64
	send := func() bool {
		serial = con.core.Serial()
		b, err := json.Marshal(newGraph(con.core.Nodes()))
		if err != nil {
			return false
		}
		if bytes.Equal(b, last) {
			return true
		}
		last = b
		return write([]byte("event: snapshot\ndata: " + string(b) + "\n\n"))
	}
	if !send() {
		return
	}
	poll := time.NewTicker(eventsPoll)
	defer poll.Stop()
	keepalive := time.NewTicker(eventsKeepalive)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			if !write([]byte(": keepalive\n\n")) {
				return
			}
		case <-poll.C:
			if !con.alive(s) {
				return
			}
			if con.core.Serial() != serial && !send() {
				return
			}
		}
	}
}

// Layout of the map's SVG (viewBox 0 0 mapSize mapSize); static/map.js
// draws with the same numbers.
const (
	mapSize   = 600
	mapRadius = 220
	mapNodeR  = 18
)

// graphView is a Graph laid out for the template: nodes on a ring.
type graphView struct {
	Graph
	Size   int
	NodeR  int
	Placed []placedNode
	Lines  []placedPath
}

type placedNode struct {
	GraphNode
	X, Y, LabelY float64
}

type placedPath struct {
	GraphPath
	X1, Y1, X2, Y2 float64
}

func (g Graph) view() graphView {
	v := graphView{Graph: g, Size: mapSize, NodeR: mapNodeR}
	at := make(map[string]placedNode, len(g.Nodes))
	for i, n := range g.Nodes {
		x, y := ringPos(i, len(g.Nodes))
		p := placedNode{GraphNode: n, X: x, Y: y, LabelY: y + mapNodeR + 16}
		v.Placed = append(v.Placed, p)
		at[n.Name] = p
	}
	for _, p := range g.Paths {
		a, b := at[p.A], at[p.B]
		v.Lines = append(v.Lines, placedPath{GraphPath: p, X1: a.X, Y1: a.Y, X2: b.X, Y2: b.Y})
	}
	return v
}

// ringPos places node i of n on the ring, the first at the top, clockwise.
func ringPos(i, n int) (x, y float64) {
	if n == 1 {
		return mapSize / 2, mapSize / 2
	}
	a := 2 * math.Pi * float64(i) / float64(n)
	x = mapSize/2 + mapRadius*math.Sin(a)
	y = mapSize/2 - mapRadius*math.Cos(a)
	return math.Round(x*10) / 10, math.Round(y*10) / 10
}
