//go:build !linux

package tun

import (
	"errors"
	"fmt"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// errUnsupported wraps errors.ErrUnsupported so callers can test for it.
func errUnsupported() error {
	return fmt.Errorf("tun: kernel TUN mode is only supported on Linux; use netstack mode: %w", errors.ErrUnsupported)
}

// Device is a kernel TUN device. On this OS none can be created.
type Device struct{}

// Create fails on this OS: kernel TUN mode is only supported on Linux.
func Create(cfg Config) (*Device, error) {
	if _, err := cfg.validate(); err != nil {
		return nil, err
	}
	return nil, errUnsupported()
}

// TUN returns nil: no Device exists on this OS.
func (d *Device) TUN() wgtun.Device { return nil }

// Name returns "".
func (d *Device) Name() string { return "" }

// Close does nothing.
func (d *Device) Close() error { return nil }

// Cleanup fails on this OS: kernel TUN mode is only supported on Linux.
func Cleanup(name string) error { return errUnsupported() }
