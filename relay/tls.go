package relay

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"time"

	"github.com/agentnet/agentnet/internal/pincert"
)

// loadOrCreateCert returns the TLS listener's certificate and its pin
// (internal/pincert): a P-256 key made on first start in dir and kept,
// and a self-signed certificate re-issued from it when missing or
// expired. Restarts keep the key, so the pin in relay.cred stays valid.
func loadOrCreateCert(dir, name string, now func() time.Time) (tls.Certificate, string, error) {
	keyPath, crtPath := filepath.Join(dir, fileTLSKey), filepath.Join(dir, fileTLSCrt)
	cert, pin, err := pincert.LoadOrCreate(pincert.Config{
		KeyPath: keyPath, CertPath: crtPath, CommonName: "agentnet relay " + name, Now: now,
	})
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("relay: TLS certificate: %w; delete %s and %s to make new ones (the pin changes: copy relay.cred to the coordinator again)",
			err, keyPath, crtPath)
	}
	return cert, pin, nil
}
