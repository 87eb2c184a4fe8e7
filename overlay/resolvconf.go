package overlay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentnet/agentnet/internal/atomicfile"
	"github.com/agentnet/agentnet/wire"
)

// Host resolver takeover for --accept-dns. The original contents are kept
// in the node's state dir and put back on Close; a backup left by a crash
// is restored first.
const (
	resolvConf       = "/etc/resolv.conf"
	resolvConfBackup = "resolv.conf.backup" // in the state dir
)

func acceptDNS(stateDir, dnsIP, domain string) error {
	backup := filepath.Join(stateDir, resolvConfBackup)
	if _, err := os.Stat(backup); err == nil {
		if err := restoreDNS(stateDir); err != nil {
			return err
		}
	}
	old, err := os.ReadFile(resolvConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", resolvConf, err)
	}
	if err := atomicfile.Write(backup, old, 0o600); err != nil {
		return fmt.Errorf("back up %s: %w", resolvConf, err)
	}
	conf := fmt.Sprintf("# written by agentnet --accept-dns; the original is in %s\nnameserver %s\nsearch %s\n", backup, dnsIP, domain)
	// Write in place (not rename): /etc/resolv.conf may be a bind mount.
	if err := os.WriteFile(resolvConf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", resolvConf, err)
	}
	return nil
}

func restoreDNS(stateDir string) error {
	backup := filepath.Join(stateDir, resolvConfBackup)
	old, err := os.ReadFile(backup)
	if err != nil {
		return fmt.Errorf("read %s: %w", backup, err)
	}
	if err := os.WriteFile(resolvConf, old, 0o644); err != nil {
		return fmt.Errorf("restore %s: %w", resolvConf, err)
	}
	return os.Remove(backup)
}

// priorUpstream returns the resolver the host used before --accept-dns
// ("ip:port"), for names outside the overlay when Config.DNSUpstream is
// unset: like Tailscale, taking over the host resolver must not cut the
// host off the rest of DNS. It reads the backup a crashed run left (the
// live file then points at us) or else the live file, and returns "" when
// neither names a nameserver other than our own.
func priorUpstream(stateDir string, dnsIP netip.Addr) string {
	b, err := os.ReadFile(filepath.Join(stateDir, resolvConfBackup))
	if err != nil {
		b, _ = os.ReadFile(resolvConf)
	}
	return upstreamFromResolvConf(b, dnsIP)
}

// upstreamFromResolvConf returns the first "nameserver" of a resolv.conf
// (resolv.conf(5)) that is not the overlay's DNS (dnsIP, or
// wire.DefaultDNSIP), as ip:53; "" when there is none. A zone in an IPv6
// address (fe80::1%eth0) is kept.
func upstreamFromResolvConf(b []byte, dnsIP netip.Addr) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if ip == dnsIP || ip == wire.DefaultDNSIP || ip.IsUnspecified() {
			continue
		}
		return netip.AddrPortFrom(ip, 53).String()
	}
	return ""
}
