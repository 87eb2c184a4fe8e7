package wire

import "fmt"

// ProtocolVersion is the control-protocol version this build speaks.
// MinProtocolVersion is the oldest peer version it still accepts.
// Bump ProtocolVersion on any incompatible change of the messages below.
const (
	ProtocolVersion    = 1
	MinProtocolVersion = 1
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
	return fmt.Errorf("%w: %s speaks control protocol %d, this build speaks %d (accepts %d..%d); upgrade the older side",
		ErrVersion, peer, v, ProtocolVersion, MinProtocolVersion, ProtocolVersion)
}
