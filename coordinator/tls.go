package coordinator

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/internal/pincert"
)

// Files in Config.DataDir.
const (
	fileDB      = "coord.db"
	fileTLSKey  = "tls.key"     // ECDSA P-256, PKCS#8 PEM
	fileTLSCert = "tls.crt"     // self-signed, PEM
	fileSignKey = audit.KeyFile // Ed25519 netmap-signing key, PKCS#8 PEM; it signs audit checkpoints too
	fileCred    = "admin.cred"  // AdminCred JSON
)

// loadOrCreateKey reads a PKCS#8 PEM private key from path, or creates one
// with gen and writes it (0600) if the file does not exist.
func loadOrCreateKey(path string, gen func() (crypto.Signer, error)) (crypto.Signer, error) {
	k, err := pincert.LoadOrCreateKey(path, gen)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	return k, nil
}

func genEd25519() (crypto.Signer, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	return k, err
}

// loadSigningKey returns the Ed25519 key that signs network maps.
func loadSigningKey(dir string) (ed25519.PrivateKey, error) {
	s, err := loadOrCreateKey(filepath.Join(dir, fileSignKey), genEd25519)
	if err != nil {
		return nil, err
	}
	k, ok := s.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("coordinator: %s is %T, want an Ed25519 key", fileSignKey, s)
	}
	return k, nil
}

// certNames are the SANs a certificate must carry.
type certNames struct {
	ips []netip.Addr
	dns []string
}

// sanNames lists the SANs for a coordinator listening on listen and reached
// at urlHost: the listen IP (unless unspecified), 127.0.0.1, ::1,
// localhost and the URL host. Clients check the pin rather than names, but
// correct names keep ordinary tools (curl --pinnedpubkey) happy.
func sanNames(listen netip.Addr, urlHost string) certNames {
	n := certNames{
		ips: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()},
		dns: []string{"localhost"},
	}
	add := func(a netip.Addr) {
		if a.IsValid() && !a.IsUnspecified() && !slices.Contains(n.ips, a.Unmap()) {
			n.ips = append(n.ips, a.Unmap())
		}
	}
	add(listen)
	if urlHost != "" {
		if a, err := netip.ParseAddr(urlHost); err == nil {
			add(a)
		} else if !slices.Contains(n.dns, urlHost) {
			n.dns = append(n.dns, urlHost)
		}
	}
	return n
}

// loadOrCreateCert returns the TLS certificate (internal/pincert). The key
// is created once and kept; the certificate is re-issued from the same key
// when a needed name is missing or it expired, so the pin (a hash of the
// public key) never changes.
func loadOrCreateCert(dir string, names certNames, now time.Time) (tls.Certificate, *x509.Certificate, error) {
	cert, _, err := pincert.LoadOrCreate(pincert.Config{
		KeyPath: filepath.Join(dir, fileTLSKey), CertPath: filepath.Join(dir, fileTLSCert),
		CommonName: "agentnet coordinator", IPs: names.ips, DNSNames: names.dns,
		Now: func() time.Time { return now },
	})
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("coordinator: TLS certificate: %w", err)
	}
	return cert, cert.Leaf, nil
}
