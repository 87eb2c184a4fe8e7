package overlay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentnet/agentnet/internal/atomicfile"
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
