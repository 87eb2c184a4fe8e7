package coordinator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/internal/atomicfile"
)

// Files in Config.DataDir.
const (
	fileDB      = "coord.db"
	fileTLSKey  = "tls.key"     // ECDSA P-256, PKCS#8 PEM
	fileTLSCert = "tls.crt"     // self-signed, PEM
	fileSignKey = audit.KeyFile // Ed25519 netmap-signing key, PKCS#8 PEM; it signs audit checkpoints too
	fileCred    = "admin.cred"  // AdminCred JSON
)

// certValidity is long because clients trust the pin, not the dates.
const certValidity = 10 * 365 * 24 * time.Hour

// loadOrCreateKey reads a PKCS#8 PEM private key from path, or creates one
// with gen and writes it (0600) if the file does not exist.
func loadOrCreateKey(path string, gen func() (crypto.Signer, error)) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := gen()
		if err != nil {
			return nil, fmt.Errorf("coordinator: generate %s: %w", path, err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("coordinator: encode %s: %w", path, err)
		}
		if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("coordinator: read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("coordinator: %s is not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("coordinator: parse %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("coordinator: %s holds an unusable key type %T", path, k)
	}
	return s, nil
}

func genECDSA() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

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

// covers reports whether cert carries all of names and is valid at now.
func (n certNames) coveredBy(cert *x509.Certificate, now time.Time) bool {
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return false
	}
	for _, a := range n.ips {
		if !slices.ContainsFunc(cert.IPAddresses, func(ip net.IP) bool { return ip.Equal(a.AsSlice()) }) {
			return false
		}
	}
	for _, d := range n.dns {
		if !slices.Contains(cert.DNSNames, d) {
			return false
		}
	}
	return true
}

// loadOrCreateCert returns the TLS certificate. The key is created once and
// kept; the certificate is re-issued from the same key when a needed name is
// missing or it expired, so the pin (a hash of the public key) never changes.
func loadOrCreateCert(dir string, names certNames, now time.Time) (tls.Certificate, *x509.Certificate, error) {
	key, err := loadOrCreateKey(filepath.Join(dir, fileTLSKey), genECDSA)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPath := filepath.Join(dir, fileTLSCert)
	if b, err := os.ReadFile(certPath); err == nil {
		if blk, _ := pem.Decode(b); blk != nil && blk.Type == "CERTIFICATE" {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil && names.coveredBy(c, now) && samePublicKey(c, key) {
				return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}, c, nil
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, nil, fmt.Errorf("coordinator: read certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "agentnet coordinator"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names.dns,
	}
	for _, a := range names.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("coordinator: create certificate: %w", err)
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return tls.Certificate{}, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}, c, nil
}

func samePublicKey(c *x509.Certificate, k crypto.Signer) bool {
	pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(k.Public())
}
