//go:build !linux

package netlab

import (
	"errors"
	"syscall"
)

// errNeedsLinux is why every lab skips here: network namespaces, `ip netns`
// and iptables are Linux's.
var errNeedsLinux = errors.New("netlab needs Linux (network namespaces, ip netns, iptables)")

func supported() error { return errNeedsLinux }

func nsProcAttr() *syscall.SysProcAttr { return nil }

func killPID(int) error { return errNeedsLinux }
