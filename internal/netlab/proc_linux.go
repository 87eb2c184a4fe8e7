package netlab

import "syscall"

// supported reports whether netlab can run on this OS: network namespaces
// are Linux's.
func supported() error { return nil }

// nsProcAttr gives a namespace command its own process group and SIGKILL
// when the test process dies.
func nsProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killPID sends SIGKILL to pid (a process left in a namespace).
func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
