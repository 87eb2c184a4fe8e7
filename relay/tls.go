package relay

import (
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
	"os"
	"time"

	"github.com/agentnet/agentnet/internal/atomicfile"
)

// certValidity is long because nodes trust the pin, not the dates.
const certValidity = 10 * 365 * 24 * time.Hour

// loadOrCreateCert returns the TLS listener's certificate from keyPath and
// crtPath, creating a P-256 key and a self-signed certificate there on first
// start. Restarts reuse them, so the pin in relay.cred stays valid.
func loadOrCreateCert(keyPath, crtPath, name string, now time.Time) (tls.Certificate, *x509.Certificate, error) {
	keyPEM, kerr := os.ReadFile(keyPath)
	crtPEM, cerr := os.ReadFile(crtPath)
	if errors.Is(kerr, fs.ErrNotExist) && errors.Is(cerr, fs.ErrNotExist) {
		var err error
		if keyPEM, crtPEM, err = newCert(name, now); err != nil {
			return tls.Certificate{}, nil, fmt.Errorf("relay: create TLS certificate: %w", err)
		}
		if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
			return tls.Certificate{}, nil, fmt.Errorf("relay: write TLS key: %w", err)
		}
		if err := atomicfile.Write(crtPath, crtPEM, 0o600); err != nil {
			return tls.Certificate{}, nil, fmt.Errorf("relay: write TLS certificate: %w", err)
		}
	} else if kerr != nil || cerr != nil {
		return tls.Certificate{}, nil, fmt.Errorf("relay: read TLS key and certificate (%v; %v); delete both %s and %s to make new ones (the pin changes: copy relay.cred again)",
			kerr, cerr, keyPath, crtPath)
	}
	cert, err := tls.X509KeyPair(crtPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("relay: TLS key pair in %s, %s: %w", keyPath, crtPath, err)
	}
	return cert, cert.Leaf, nil
}

func newCert(name string, now time.Time) (keyPEM, crtPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "agentnet relay " + name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
