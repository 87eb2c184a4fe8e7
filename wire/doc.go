// Package wire holds the wire types shared by the coordinator and the node:
// the network map and its signature, node identities (did:key), join tokens,
// certificate pins, the control-protocol messages and version, and the
// signature that authenticates a node's requests after enrollment.
//
// Nothing else is shared between the coordinator and the node. This package
// imports neither wireguard-go nor gVisor, so both sides can depend on it.
package wire
