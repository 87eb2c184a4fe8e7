package overlay

import (
	"errors"
	"fmt"
	"os"
)

// Host resolver takeover for --accept-dns. The original file is kept next
// to it and put back on Close; a backup left by a crash is restored first.
const (
	resolvConf       = "/etc/resolv.conf"
	resolvConfBackup = "/etc/resolv.conf.agentnet-backup"
)

func acceptDNS(dnsIP, domain string) error {
	if _, err := os.Stat(resolvConfBackup); err == nil {
		if err := restoreDNS(); err != nil {
			return err
		}
	}
	old, err := os.ReadFile(resolvConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", resolvConf, err)
	}
	if err := os.WriteFile(resolvConfBackup, old, 0o644); err != nil {
		return fmt.Errorf("back up %s: %w", resolvConf, err)
	}
	conf := fmt.Sprintf("# written by agentnet --accept-dns; the original is in %s\nnameserver %s\nsearch %s\n", resolvConfBackup, dnsIP, domain)
	// Write in place (not rename): /etc/resolv.conf may be a bind mount.
	if err := os.WriteFile(resolvConf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", resolvConf, err)
	}
	return nil
}

func restoreDNS() error {
	old, err := os.ReadFile(resolvConfBackup)
	if err != nil {
		return fmt.Errorf("read %s: %w", resolvConfBackup, err)
	}
	if err := os.WriteFile(resolvConf, old, 0o644); err != nil {
		return fmt.Errorf("restore %s: %w", resolvConf, err)
	}
	return os.Remove(resolvConfBackup)
}
