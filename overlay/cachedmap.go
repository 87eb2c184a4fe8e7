package overlay

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// LoadCachedMap returns the network map a node cached in stateDir, after
// verifying it with the coordinator key stored there, exactly as the node
// does before using it at start. It needs no running node; tools such as
// 'agentnet netcheck' read their relays and credentials from it.
func LoadCachedMap(stateDir string) (*wire.Map, error) {
	st, ok, err := loadState(stateDir, time.Now()) // a tool, not a node: the real clock
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no node state in %s (no %s); is --state the node's state directory?", stateDir, stateFile)
	}
	if !st.enrolled() {
		return nil, fmt.Errorf("node in %s has not enrolled yet; start it with a join token first", stateDir)
	}
	_, m, err := loadCachedMap(stateDir, ed25519.PublicKey(st.CoordinatorKey))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no cached network map in %s; start the node once so it fetches one", filepath.Join(stateDir, mapFile))
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}
