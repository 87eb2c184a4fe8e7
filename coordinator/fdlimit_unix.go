//go:build unix

package coordinator

import "syscall"

// fileLimit returns the process's soft limit on open files (Go raises it
// to the hard limit at start), or 0 if unknown.
func fileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return uint64(l.Cur)
}
