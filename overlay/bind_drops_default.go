//go:build !linux

package overlay

// socketDrops: the kernel's per-socket drop count is read on Linux only.
func (s *bindSocket) socketDrops() (uint64, bool) { return 0, false }
