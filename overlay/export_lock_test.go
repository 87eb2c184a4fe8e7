package overlay

// HoldMapForTest takes the map-application lock (mapMu) as a map
// application in progress would; release gives it back.
func (n *Node) HoldMapForTest() (release func()) {
	n.mapMu.Lock()
	return n.mapMu.Unlock
}
