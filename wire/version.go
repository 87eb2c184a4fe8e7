package wire

import "fmt"

// ProtocolVersion is the control-protocol version this build speaks.
// MinProtocolVersion is the oldest peer version it still accepts.
// Bump ProtocolVersion on any incompatible change of the messages below.
//
// Version 2: node requests carry a nonce (HeaderNonce) and their signature
// covers the query and the nonce; a version-1 node's requests would fail
// verification, so 1 is no longer accepted and is told to upgrade.
const (
	ProtocolVersion    = 2
	MinProtocolVersion = 2
)

// HeaderProtocol carries the sender's ProtocolVersion on every control
// request and response.
const HeaderProtocol = "Agentnet-Protocol"

// CheckVersion reports whether a peer speaking version v can work with this
// build. The error names both versions and says what to do.
func CheckVersion(peer string, v int) error {
	if v >= MinProtocolVersion && v <= ProtocolVersion {
		return nil
	}
	who := "this side"
	if v < MinProtocolVersion {
		who = "the " + peer
	}
	return fmt.Errorf("%w: %s speaks control protocol %d, this build speaks %d (accepts %d..%d); upgrade %s",
		ErrVersion, peer, v, ProtocolVersion, MinProtocolVersion, ProtocolVersion, who)
}
