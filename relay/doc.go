// Package relay will hold the self-hosted TURN/STUN relay (pion/turn) and the
// TURN client allocation the node's socket layer uses when no direct path
// exists. Until then nodes reach each other only on direct UDP paths through
// overlay.Bind, which is where the relay path will be multiplexed in.
package relay
