package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// target is where a destination goes after the overlay/outside decision.
type target struct {
	// overlay is true when the destination is on the overlay.
	overlay bool
	// ap is the destination address when known (always for the overlay;
	// outside names are left to the host resolver).
	ap netip.AddrPort
	// name is the outside "host:port" when ap is not set.
	name string
}

func (t target) String() string {
	if t.ap.IsValid() {
		return t.ap.String()
	}
	return t.name
}

// router applies the destination rule shared by SOCKS5 and HTTPProxy.
type router struct {
	ov           Overlay
	allowOutside bool
}

// route decides where host:port goes. host is an IP literal (optionally in
// brackets) or a name. Errors wrap ErrOutside or ErrUnknownName.
func (r router) route(ctx context.Context, host string, port uint16) (target, error) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap().WithZone("")
		ap := netip.AddrPortFrom(ip, port)
		if r.ov.Contains(ip) {
			return target{overlay: true, ap: ap}, nil
		}
		if r.allowOutside {
			return target{ap: ap}, nil
		}
		return target{}, fmt.Errorf("%w: %s", ErrOutside, ap)
	}
	if host == "" {
		return target{}, fmt.Errorf("%w: empty host", ErrUnknownName)
	}
	ip, err := r.ov.Resolve(ctx, host)
	if err == nil && ip.IsValid() {
		// Whatever the node resolves is the node's business: dial it on
		// the overlay even if Contains disagrees.
		return target{overlay: true, ap: netip.AddrPortFrom(ip.Unmap(), port)}, nil
	}
	if r.allowOutside {
		return target{name: net.JoinHostPort(host, strconv.Itoa(int(port)))}, nil
	}
	if err == nil {
		err = errors.New("no address")
	}
	return target{}, fmt.Errorf("%w %q: %v", ErrUnknownName, host, err)
}

// dial connects to t: overlay destinations through the node, outside ones
// with the host's dialer.
func (r router) dial(ctx context.Context, network string, t target) (net.Conn, error) {
	if t.overlay {
		return r.ov.Dial(ctx, network, t.ap.String())
	}
	var d net.Dialer
	return d.DialContext(ctx, network, t.String())
}

// splitPort parses "host:port" with a numeric port.
func splitPort(hostport string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	return host, uint16(p), nil
}
