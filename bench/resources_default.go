//go:build !linux

package bench

// raiseNoFile leaves the open-file limit alone: the control-plane runs that
// need thousands of sockets are measured on Linux.
func raiseNoFile() {}

// cpuSeconds is 0: this process's CPU time is read with getrusage on Linux
// only, so CPU columns read 0 here.
func cpuSeconds() float64 { return 0 }
