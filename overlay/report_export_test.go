package overlay

// AddDenialForTest hands the node a filter denial, as the filter's deny
// callback does.
func (n *Node) AddDenialForTest(d Denial) { n.addDenial(d) }
