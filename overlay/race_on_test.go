//go:build race

package overlay_test

// raceEnabled: the race detector slows wireguard-go and gVisor ~10×, so the
// large-mesh tests shrink under it.
const raceEnabled = true
