// Package pincert makes and keeps the self-signed TLS certificates that
// agentnet's servers (the coordinator, a relay's TLS listener) present and
// clients trust by pin alone (wire.CertPin: a hash of the public key). The
// key is made once and kept on disk, so the pin survives restarts; the
// certificate is re-issued from the same key whenever it no longer fits
// (missing, expired, made for another key, lacking a name), which leaves
// the pin unchanged.
package pincert

import (
	"crypto"
	"crypto/ecdsa"
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
	"slices"
	"time"

	"github.com/agentnet/agentnet/internal/atomicfile"
	"github.com/agentnet/agentnet/wire"
)

// Validity is long because clients trust the pin, not the dates.
const Validity = 10 * 365 * 24 * time.Hour

// Config says where a certificate and its key live and what the
// certificate names.
type Config struct {
	// KeyPath is required: the ECDSA P-256 key, PKCS#8 PEM, written 0600
	// on first use and kept.
	KeyPath string
	// CertPath is required: the self-signed certificate, PEM, written
	// 0600 whenever it is (re-)issued.
	CertPath string
	// CommonName is optional: the certificate's subject CN, for humans.
	// Default: none.
	CommonName string
	// IPs and DNSNames are optional: the names (SANs) the certificate
	// must carry. Clients check the pin rather than names, but correct
	// names keep ordinary tools (curl --pinnedpubkey) happy. Default:
	// none.
	IPs      []netip.Addr
	DNSNames []string
	// Now is optional: the clock for the validity window. Default
	// time.Now.
	Now func() time.Time
}

// LoadOrCreate returns the certificate at cfg.CertPath (Leaf set) and its
// pin, creating the key on first use and (re-)issuing the certificate from
// it when the one on disk is missing, unreadable, expired, for another key
// or lacks one of the configured names.
func LoadOrCreate(cfg Config) (tls.Certificate, string, error) {
	if cfg.KeyPath == "" || cfg.CertPath == "" {
		return tls.Certificate{}, "", errors.New("pincert: KeyPath and CertPath are required")
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	key, err := LoadOrCreateKey(cfg.KeyPath, genECDSA)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	t := now()
	if b, err := os.ReadFile(cfg.CertPath); err == nil {
		if blk, _ := pem.Decode(b); blk != nil && blk.Type == "CERTIFICATE" {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil && cfg.coveredBy(c, t) && samePublicKey(c, key) {
				return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}, wire.CertPin(c), nil
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, "", fmt.Errorf("read certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cfg.CommonName},
		NotBefore:             t.Add(-time.Hour),
		NotAfter:              t.Add(Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              cfg.DNSNames,
	}
	for _, a := range cfg.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("create certificate: %w", err)
	}
	if err := atomicfile.Write(cfg.CertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return tls.Certificate{}, "", err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}, wire.CertPin(c), nil
}

// coveredBy reports whether cert carries all of cfg's names and is valid
// at now.
func (cfg Config) coveredBy(cert *x509.Certificate, now time.Time) bool {
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return false
	}
	for _, a := range cfg.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, func(ip net.IP) bool { return ip.Equal(a.AsSlice()) }) {
			return false
		}
	}
	for _, d := range cfg.DNSNames {
		if !slices.Contains(cert.DNSNames, d) {
			return false
		}
	}
	return true
}

func samePublicKey(c *x509.Certificate, k crypto.Signer) bool {
	pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(k.Public())
}

func genECDSA() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// LoadOrCreateKey reads a PKCS#8 PEM private key from path, or creates one
// with gen and writes it (0600) if the file does not exist. A file that
// exists but does not hold a usable key is an error, never replaced: a new
// key would change the pin (or, for a signing key, every signature).
func LoadOrCreateKey(path string, gen func() (crypto.Signer, error)) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := gen()
		if err != nil {
			return nil, fmt.Errorf("generate %s: %w", path, err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", path, err)
		}
		if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s is not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s holds an unusable key type %T", path, k)
	}
	return s, nil
}
