// Package overlay is the node engine: it enrolls with the coordinator,
// keeps the last signed network map (verified, cached on disk), runs a
// wireguard-go device whose packets leave through our own conn.Bind and
// enter a gVisor netstack (package netstack), serves agent names through the
// built-in DNS (package dns), and offers Dial/Listen on the overlay to Go
// programs and a local API (unix socket) to the CLI.
//
// A newcomer can follow a packet from Node.Dial (dial.go) into the netstack,
// out through the TUN seam into wireguard-go, and onto the wire in bind.go;
// and follow control from enroll (control.go) to applyMap (node.go, wg.go).
package overlay
