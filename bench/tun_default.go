//go:build !linux

package bench

import (
	"context"
	"errors"
	"net/netip"
)

var errNeedsRoot = errors.New("kernel TUN setups run on Linux only")

type tunLab struct{ ipB netip.Addr }

func tunSupported() error { return errNeedsRoot }

func newTUNLab(context.Context, Options, string) (*tunLab, error) { return nil, errNeedsRoot }

func (tl *tunLab) setup(context.Context, string, netip.Addr) (*setup, error) {
	return nil, errNeedsRoot
}

func (tl *tunLab) close() {}
